"""Tiny models and batches shared by the meft tests (hidden 16, 2 layers, dropout 0.1 by default)."""

from __future__ import annotations

import copy

import torch
import transformers as tf

import meft

VOCAB, BATCH, SEQ = 64, 2, 6

# case name -> (config class, model class, config kwargs)
_COMMON = dict(vocab_size=VOCAB, max_position_embeddings=40, num_labels=2)
MODELS = {
    "bert-cls": (
        tf.BertConfig,
        tf.BertForSequenceClassification,
        dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32),
    ),
    "roberta-cls": (
        tf.RobertaConfig,
        tf.RobertaForSequenceClassification,
        dict(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            pad_token_id=1,
            type_vocab_size=1,
        ),
    ),
    "bart-seq2seq": (
        tf.BartConfig,
        tf.BartForConditionalGeneration,
        dict(
            d_model=16,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=2,
            forced_eos_token_id=None,
        ),
    ),
    "bart-cls": (
        tf.BartConfig,
        tf.BartForSequenceClassification,
        dict(
            d_model=16,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=2,
            forced_eos_token_id=None,
        ),
    ),
    "opt-causal-lm": (
        tf.OPTConfig,
        tf.OPTForCausalLM,
        dict(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            ffn_dim=32,
            word_embed_proj_dim=16,
            pad_token_id=1,
            bos_token_id=2,
            eos_token_id=2,
        ),
    ),
    # opt-350m's shape: post-LayerNorm layers, embeddings projected 8 <-> 16, no final LayerNorm.
    "opt350m-causal-lm": (
        tf.OPTConfig,
        tf.OPTForCausalLM,
        dict(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            ffn_dim=32,
            word_embed_proj_dim=8,
            do_layer_norm_before=False,
            pad_token_id=1,
            bos_token_id=2,
            eos_token_id=2,
        ),
    ),
}

# Pre-LayerNorm decoders (test_decoders.py): hidden 32, 4 query heads sharing 2 key/value heads (GQA);
# Mistral and Qwen2 attend through a 3-token sliding window, so their window masks matter at SEQ = 6.
_LLAMA = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
_QWEN2 = dict(_LLAMA, use_sliding_window=True, sliding_window=3, max_window_layers=0)
_MISTRAL = dict(_LLAMA, sliding_window=3)
_GPT2 = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, pad_token_id=0, bos_token_id=1, eos_token_id=2)
DECODERS = {
    "llama-causal-lm": (tf.LlamaConfig, tf.LlamaForCausalLM, _LLAMA),
    "llama-cls": (tf.LlamaConfig, tf.LlamaForSequenceClassification, _LLAMA),
    "qwen2-causal-lm": (tf.Qwen2Config, tf.Qwen2ForCausalLM, _QWEN2),
    "qwen2-cls": (tf.Qwen2Config, tf.Qwen2ForSequenceClassification, _QWEN2),
    "mistral-causal-lm": (tf.MistralConfig, tf.MistralForCausalLM, _MISTRAL),
    "mistral-cls": (tf.MistralConfig, tf.MistralForSequenceClassification, _MISTRAL),
    "gpt2-causal-lm": (tf.GPT2Config, tf.GPT2LMHeadModel, _GPT2),
    "gpt2-cls": (tf.GPT2Config, tf.GPT2ForSequenceClassification, _GPT2),
}

_DROPOUT_KEYS = {
    tf.BertConfig: ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    tf.RobertaConfig: ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    tf.BartConfig: ("dropout", "attention_dropout", "activation_dropout", "classifier_dropout"),
    tf.OPTConfig: ("dropout", "attention_dropout"),
    tf.LlamaConfig: ("attention_dropout",),
    tf.Qwen2Config: ("attention_dropout",),
    tf.MistralConfig: ("attention_dropout",),
    tf.GPT2Config: ("resid_pdrop", "embd_pdrop", "attn_pdrop"),
}


def hf_config(case: str, dropout: float = 0.1, **overrides):
    config_cls, _, kwargs = {**MODELS, **DECODERS}[case]
    drop = {k: dropout for k in _DROPOUT_KEYS[config_cls]}
    return config_cls(**{**_COMMON, **kwargs, **drop, **overrides})


def tiny_model(
    case: str, dtype=torch.float64, dropout: float = 0.1, seed: int = 0, device="cpu", attn="eager", **overrides
):
    """A randomly initialised tiny model in train mode."""
    _, model_cls, _ = {**MODELS, **DECODERS}[case]
    config = hf_config(case, dropout, **overrides)
    config._attn_implementation = attn
    torch.manual_seed(seed)
    with torch.device(device):
        model = model_cls(config)
    assert model.config._attn_implementation == attn
    return model.to(dtype).train()


def batch_for(case: str, seed: int = 0, batch: int = BATCH, seq: int = SEQ) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (batch, seq), generator=gen)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if case.startswith("bart"):
        ids[:, -1] = 2  # one </s> per row, for BART's classification head
    if case.endswith("cls"):
        out["labels"] = torch.randint(0, 2, (batch,), generator=gen)
    elif case.endswith("causal-lm"):
        out["labels"] = ids.clone()
    else:
        out["labels"] = torch.randint(4, VOCAB, (batch, seq), generator=gen)
    return out


def converted_pair(case: str, config: meft.MEFTConfig, dtype=torch.float64, **kw):
    """(reversible, ordinary): the same tiny model converted twice with identical adapters; the second
    with num_rev_layers=0 (ordinary backprop through the same architecture)."""
    base = tiny_model(case, dtype=dtype, **kw)
    other = copy.deepcopy(base)
    torch.manual_seed(1)
    rev = meft.convert(base, config)
    torch.manual_seed(1)
    ref = meft.convert(other, meft.MEFTConfig(**{**config.to_dict(), "num_rev_layers": 0}))
    return rev, ref


def grads_after_step(model, batch, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and gradients of every trainable parameter after one forward/backward with ``seed``."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = model(**batch).loss
    loss.backward()
    # A parameter autograd never reached has grad None: count it as zero (the checks then see it).
    grads = {
        n: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
        for n, p in model.named_parameters()
        if p.requires_grad
    }
    return loss.detach(), grads


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300))


def raises_one_line(call, needles):
    """``call()`` raises a one-line MEFTError holding every needle; returns the message."""
    import pytest

    import meft

    with pytest.raises(meft.MEFTError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


def check_float64_gradients(
    case: str, config, *, tolerance: float, every_one_reached: bool = False, **model_kwargs
) -> None:
    """Reversible against ordinary backprop on the same float64 model: the same loss (same dropout
    masks), every trainable parameter's gradient within ``tolerance`` (relative), every adapter
    reached; ``every_one_reached``: every trainable parameter, the head included, gets a non-zero
    gradient (else a zero gradient must be zero on both sides)."""
    import torch

    rev, ref = converted_pair(case, config, dtype=torch.float64, **model_kwargs)
    batch = batch_for(case)
    loss_rev, grads_rev = grads_after_step(rev, batch)
    loss_ref, grads_ref = grads_after_step(ref, batch)
    assert torch.equal(loss_rev, loss_ref)
    assert grads_rev.keys() == grads_ref.keys()
    for name, g in grads_ref.items():
        if every_one_reached:
            assert g.abs().max() > 0, name
        if g.abs().max() == 0:
            assert grads_rev[name].abs().max() == 0, name
        else:
            assert relative_error(grads_rev[name], g) < tolerance, name
    adapters = [n for n in grads_rev if ".adapters." in n]
    assert adapters and all(grads_rev[n].abs().max() > 0 for n in adapters), adapters


def free_port() -> int:
    """A TCP port free now on this machine, for a process group's rendezvous."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
