"""Float32 gradient error of MEFT's reversible backprop against ordinary backprop, per family and variant.

For each case, a small random-weight model (default hidden 32, 4 layers per stack, dropout 0.1, train
mode) is converted twice with identical adapters: once with every layer reversible, once with
num_rev_layers=0 (ordinary backprop through the same architecture). With the same seed both draw the
same dropout masks; the table gives max over trainable parameters of ||g_rev - g_ref|| / ||g_ref||.

    python benchmarks/meft_gradient_error.py [--hidden 32] [--layers 4] [--dtype float32]
    python benchmarks/meft_gradient_error.py --hidden 768 --layers 12 --cases bert --num-rev-layers 12,6,3,1
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
import transformers as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not
import meft  # noqa: E402

VOCAB, BATCH, SEQ = 1000, 2, 16


def _cases(h: int, n: int) -> dict:
    heads, ffn = max(h // 64, 2), 4 * h
    drop_bert = dict(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    drop_bart = dict(dropout=0.1, attention_dropout=0.1, activation_dropout=0.1)
    bart = dict(d_model=h, encoder_layers=n, decoder_layers=n, encoder_attention_heads=heads, decoder_attention_heads=heads,
                encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, forced_eos_token_id=None, **drop_bart)
    opt = dict(hidden_size=h, num_hidden_layers=n, num_attention_heads=heads, ffn_dim=ffn, dropout=0.1, attention_dropout=0.1)
    common = dict(vocab_size=VOCAB, max_position_embeddings=64, num_labels=2)
    return {
        "bert (classification)": (tf.BertForSequenceClassification, tf.BertConfig(
            hidden_size=h, num_hidden_layers=n, num_attention_heads=heads, intermediate_size=ffn, **drop_bert, **common)),
        "roberta (classification)": (tf.RobertaForSequenceClassification, tf.RobertaConfig(
            hidden_size=h, num_hidden_layers=n, num_attention_heads=heads, intermediate_size=ffn, **drop_bert, **common)),
        "bart (seq2seq)": (tf.BartForConditionalGeneration, tf.BartConfig(**bart, **common)),
        "bart (classification)": (tf.BartForSequenceClassification, tf.BartConfig(**bart, **common)),
        "opt (causal LM)": (tf.OPTForCausalLM, tf.OPTConfig(word_embed_proj_dim=h, **opt, **common)),
        "opt-350m shape (causal LM)": (tf.OPTForCausalLM, tf.OPTConfig(
            word_embed_proj_dim=h // 2, do_layer_norm_before=False, **opt, **common)),
    }


def _batch(name: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, VOCAB, (BATCH, SEQ), generator=gen)
    if name.startswith("bart"):
        ids[:, -1] = 2
    if "classification" in name:
        labels = torch.randint(0, 2, (BATCH,), generator=gen)
    elif "seq2seq" in name:
        labels = torch.randint(4, VOCAB, (BATCH, SEQ), generator=gen)
    else:
        labels = ids.clone()
    return {"input_ids": ids, "labels": labels}


def _grads(model, batch) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model(**batch).loss.backward()
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def gradient_error(model_cls, config, batch, variant: str, dtype: torch.dtype, num_rev: int | None = None) -> float:
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    base = model_cls(config).to(dtype).train()
    models = []
    for num_rev in (num_rev, 0):
        torch.manual_seed(1)
        models.append(meft.convert(copy.deepcopy(base), meft.MEFTConfig(variant=variant, num_rev_layers=num_rev)))
    rev, ref = (_grads(m, batch) for m in models)
    return max(float((rev[n].double() - g.double()).norm() / g.double().norm()) for n, g in ref.items() if g.abs().max() > 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--cases", default="", help="Only models whose name contains this, e.g. bert.")
    parser.add_argument("--num-rev-layers", default="", help="Comma-separated reversible depths; default: all layers.")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    depths = [int(n) for n in args.num_rev_layers.split(",") if n] or [None]
    print(f"hidden {args.hidden}, {args.layers} layers per stack, batch {BATCH} x seq {SEQ}, {args.dtype}, dropout 0.1\n")
    print("| model | reversible layers | meft1 | meft2 | meft3 |")
    print("| --- | --- | --- | --- | --- |")
    for name, (model_cls, config) in _cases(args.hidden, args.layers).items():
        if args.cases not in name:
            continue
        for depth in depths:
            errors = [gradient_error(model_cls, copy.deepcopy(config), _batch(name), v, dtype, depth)
                      for v in ("meft1", "meft2", "meft3")]
            label = f"{args.layers if depth is None else depth} / {args.layers}"
            print(f"| {name} | {label} | " + " | ".join(f"{e:.1e}" for e in errors) + " |", flush=True)


if __name__ == "__main__":
    main()
