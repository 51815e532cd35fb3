"""Synthetic Results with hand-computable numbers, for the sweep, reporter and CLI tests.

For a configuration with ``k = seq_len * batch_size`` tokens and a method factor ``f`` (ft 8,
lora 6, adapter 5, ft+ckpt 2, lora+ckpt 1) the saved tensors are:

    model.shared                               embedding        8 k
    model.encoder.layers.{0,1}.self_attn.q_proj linear_input     f k 1024   (each layer)
    model.encoder.layers.{0,1}.fc1              linear_input     f k 1024
                                               activation_fn    f k 512
    classification_head.dense                  linear_input     4096 batch

so ``saved_activations = 8k + 2 * f k 2560 + 4096 batch``; ``peak_activations`` adds ``2048 k``
(tensors freed before the end of the forward) and is also ``activations_at_peak``;
``temporaries = 256 k``, and ``peak`` is the sum of parameters, gradients, optimizer state,
activations at the peak and temporaries.
"""

from __future__ import annotations

from memprof.results.result import CATEGORIES, Memory, Result, ResultSet, layers_frame

FACTOR = {"ft": 8, "lora": 6, "adapter": 5, "ft+ckpt": 2, "lora+ckpt": 1, "meft": 1}
TOTAL_PARAMS = 400_000_000
TRAINABLE = {
    "ft": TOTAL_PARAMS,
    "lora": 2_000_000,
    "adapter": 4_000_000,
    "ft+ckpt": TOTAL_PARAMS,
    "lora+ckpt": 2_000_000,
    "meft": 3_000_000,
}
ENVIRONMENT = {"python": "3.11.0", "torch": "2.13.0", "transformers": "5.24.0", "memprof": "0.1.0"}


def layers_records(method: str, seq_len: int, batch_size: int) -> list[dict]:
    f, k = FACTOR[method], seq_len * batch_size
    recs = [{"module": "model.shared", "categories": {"embedding": 8 * k}}]
    for i in range(2):
        recs.append(
            {"module": f"model.encoder.layers.{i}.self_attn.q_proj", "categories": {"linear_input": f * k * 1024}}
        )
        recs.append(
            {
                "module": f"model.encoder.layers.{i}.fc1",
                "categories": {"linear_input": f * k * 1024, "activation_fn": f * k * 512},
            }
        )
    recs.append({"module": "classification_head.dense", "categories": {"linear_input": 4096 * batch_size}})
    for rec in recs:
        rec["saved_bytes"] = sum(rec["categories"].values())
    return recs


def make_result(
    method: str,
    seq_len: int,
    batch_size: int,
    *,
    backbone: str = "bart-large",
    engine: str = "fake",
    target: str = "cuda",
    dtype: str = "fp32",
    attn: str = "sdpa",
) -> Result:
    k = seq_len * batch_size
    recs = layers_records(method, seq_len, batch_size)
    saved = sum(r["saved_bytes"] for r in recs)
    trainable = TRAINABLE[method]
    mem = Memory(
        parameters=4 * TOTAL_PARAMS,
        gradients=4 * trainable,
        optimizer_state=8 * trainable,
        saved_activations=saved,
        peak_activations=saved + 2048 * k,
        temporaries=256 * k,
    )
    mem.activations_at_peak = mem.peak_activations
    mem.peak = mem.parameters + mem.gradients + mem.optimizer_state + mem.activations_at_peak + mem.temporaries
    return Result(
        backbone=backbone,
        method=method,
        engine=engine,
        target=target,
        dtype=dtype,
        attn_implementation=attn,
        seq_len=seq_len,
        batch_size=batch_size,
        task="classification",
        trainable_params=trainable,
        total_params=TOTAL_PARAMS,
        memory=mem,
        layers=layers_frame(recs),
        step_time_s=None,
        environment=dict(ENVIRONMENT),
    )


def fake_run(config, cache=None) -> Result:
    """A stand-in for memprof.engines.run: deterministic synthetic numbers for ``config``."""
    result = make_result(
        config.method,
        config.seq_len,
        config.batch_size,
        backbone=config.backbone,
        engine=config.engine,
        target=config.target,
        dtype=config.dtype,
        attn=config.attn,
    )
    result.loss = config.loss
    return result


GOLDEN_METHODS = ["ft", "lora", "adapter"]
GOLDEN_SEQ_LENS = [128, 256]
GOLDEN_BATCH_SIZES = [2, 4]
GOLDEN_COMMAND = (
    "memprof compare --backbone bart-large --methods ft,lora,adapter --seq-lens 128,256 "
    "--batch-sizes 2,4 --engine fake --target cuda --dtype fp32 --attn sdpa"
)


def golden_resultset() -> ResultSet:
    """The fixed sweep behind tests/golden/summary.md: 3 methods x 2 seq lens x 2 batch sizes,
    with adapter out of memory at (256, 4) and lora failing at (128, 2)."""
    results = []
    for m in GOLDEN_METHODS:
        for b in GOLDEN_BATCH_SIZES:
            for s in GOLDEN_SEQ_LENS:
                r = make_result(m, s, b)
                if (m, s, b) == ("adapter", 256, 4):
                    r = Result(
                        backbone=r.backbone,
                        method=m,
                        engine="fake",
                        target="cuda",
                        dtype="fp32",
                        attn_implementation="sdpa",
                        seq_len=s,
                        batch_size=b,
                        task="classification",
                        status="oom",
                        message="OutOfMemoryError: CUDA out of memory",
                    )
                if (m, s, b) == ("lora", 128, 2):
                    r = Result(
                        backbone=r.backbone,
                        method=m,
                        engine="fake",
                        target="cuda",
                        dtype="fp32",
                        attn_implementation="sdpa",
                        seq_len=s,
                        batch_size=b,
                        task="classification",
                        status="error",
                        message="RuntimeError: boom | with a pipe",
                    )
                results.append(r)
    options = {
        "backbone": "bart-large",
        "methods": GOLDEN_METHODS,
        "seq_lens": GOLDEN_SEQ_LENS,
        "batch_sizes": GOLDEN_BATCH_SIZES,
        "engine": "fake",
        "target": "cuda",
        "dtype": "fp32",
        "attn": "sdpa",
        "task": "classification",
    }
    return ResultSet(results=results, command=GOLDEN_COMMAND, options=options)


__all__ = ["CATEGORIES", "fake_run", "golden_resultset", "make_result"]
