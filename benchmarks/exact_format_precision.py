"""Is each dtype's fixed-point format precise enough? The forward of exact MEFT against float MEFT.

Two models, at 6 and 24 layers, eval mode, eager attention: all-MiniLM-L6-v2's pretrained layers
stacked (``meft_fidelity.stacked_minilm``; post-LayerNorm, a residual stream of order 1) on real
sentences (the first 64 of SST-2's training split when ``--data-dir`` has it, else four built-in
ones), and a Llama initialised as transformers does (pre-LayerNorm: its residual stream is small,
RMS about 0.02, where a fixed step matters most) on random token ids; seq 64. For each variant and
dtype, one converted model (same adapters) runs in exact arithmetic (the dtype's fixed-point
format, meft.fixed_point NOTE [ Formats ]) and in float arithmetic with the same lam and beta
(13/128, so that only the arithmetic differs); both are compared with a float64 run of float
arithmetic (the reference). Cells: relative difference (Frobenius norm) of the last hidden states.
The format is precise enough where exact's difference from the reference is about float's, i.e.
within the dtype's own rounding.

    python benchmarks/exact_format_precision.py [--data-dir ../shared/data/sst2] [--depths 6,24]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_machine import describe  # noqa: E402
from meft_fidelity import DTYPES, SENTENCES, stacked_minilm  # noqa: E402
from sst2_data import read_tsv  # noqa: E402

import meft  # noqa: E402
from meft import fixed_point  # noqa: E402


def sentences(data_dir: Path | None, n: int = 64) -> list[str]:
    path = None if data_dir is None else data_dir / "train.tsv"
    return read_tsv(path, n)[0] if path is not None and path.exists() else SENTENCES


def last_hidden(base, batch, variant: str, arithmetic: str, dtype: torch.dtype) -> torch.Tensor:
    torch.manual_seed(1)  # the same adapters for every run
    exact = meft.MEFTConfig(variant=variant)  # its scales as exact arithmetic uses them: 13/128 for 0.1
    config = meft.MEFTConfig(variant=variant, arithmetic=arithmetic, lam=exact.effective_lam, beta=exact.effective_beta)
    model = meft.convert(copy.deepcopy(base), config).to(dtype).eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        return model.base_model(**inputs).last_hidden_state.double()


def llama(depth: int, seq_len: int, batch_size: int = 16):
    """(model, batch): a LlamaForCausalLM of width 256 initialised as transformers does, random ids."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=1000,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=depth,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=seq_len,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    ids = torch.randint(0, 1000, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--depths", default="6,24")
    ap.add_argument("--seq-len", type=int, default=64)
    args = ap.parse_args()
    text = sentences(args.data_dir)
    run = describe()
    print(f"{run['date']}; {run['machine']}; {len(text)} sentences, seq {args.seq_len}.\n")
    print("| model | layers | variant | dtype | format | exact vs float64 | float vs float64 | exact vs float |")
    print("| --- | ---: | --- | --- | --- | ---: | ---: | ---: |")
    models = {
        "all-MiniLM-L6-v2 (stacked)": lambda n: stacked_minilm(n, args.seq_len, text),
        "llama, random init": lambda n: llama(n, args.seq_len),
    }
    for (model_name, make), depth in ((m, d) for m in models.items() for d in map(int, args.depths.split(","))):
        base, batch = make(depth)
        for variant in ("meft1", "meft2", "meft3"):
            reference = last_hidden(base, batch, variant, "float", torch.float64)
            for name, dtype in DTYPES.items():
                exact = last_hidden(base, batch, variant, "exact", dtype)
                float_ = last_hidden(base, batch, variant, "float", dtype)
                fmt = fixed_point.format_for(dtype)
                print(
                    f"| {model_name} | {depth} | {variant} | {name} | {fmt} | {relative(exact, reference):.2e} "
                    f"| {relative(float_, reference):.2e} | {relative(exact, float_):.2e} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
