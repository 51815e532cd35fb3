"""The fake engine's prediction of a step's peak against what the device measures.

For each backbone, method and sequence length (batch 8 by default: the batch size of the paper's
and this project's memory tables, which every default backbone holds in fp32 on one 80 GiB GPU),
``predicted`` is the fake engine's peak (``Memory.peak``: no weights, no arithmetic, target = the
measured device) and ``measured`` the real step's:

* ``--measured cuda`` (the default, on a GPU): ``torch.cuda.max_memory_allocated`` over the step
  (``Memory.cuda_max_allocated``, the cuda engine; the model is on the device before the peak
  statistics are reset, so it includes the parameters as the prediction does). Goal: within 5%.
* ``--measured cpu`` (anywhere): the cpu engine's peak, from the same live-storage timeline over
  real tensors (the CPU allocator keeps no such statistic). The fake engine models the cpu kernels
  byte for byte (``tests/memprof/test_engines.py``), so the error is 0 there.

``timeline`` is the measured engine's own instrumented peak (its ``Memory.peak``): with the device
figure it separates the fake engine's modelling of the kernels (predicted against timeline) from
what the allocator adds (timeline against measured: 512-byte rounding, cuBLAS workspaces, anything
else resident). ``resident`` is the device memory still allocated after the step (the model,
workspaces). Everything is written to ``--out``: ``gpu_validate.json`` (the rows), ``gpu_validate.md``
(the table) and ``results.json`` (every Result, readable by ``memprof report``).

    python benchmarks/gpu_validate.py --out reports/gpu-validate                # on a GPU
    python benchmarks/gpu_validate.py --measured cpu --backbones all-minilm-l6-v2 --seq-lens 64
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from memprof.engines import ModelCache, run
from memprof.engines.common import failed_result
from memprof.engines.config import ProfileConfig
from memprof.errors import MemprofError
from memprof.results.result import Result, ResultSet, environment, write_json

BACKBONES = ("bert-base", "bart-large", "opt-350m", "llama-3.2-1b")
METHODS = ("ft", "lora", "meft1")
SEQ_LENS = (128, 512)
BATCH_SIZE = 8
TOLERANCE = 0.05
MIB = 2**20


@dataclass
class Row:
    """One configuration: the prediction, the measurement, and how far apart (``predicted / measured - 1``)."""

    backbone: str
    method: str
    seq_len: int
    batch_size: int
    dtype: str
    predicted: int | None
    measured: int | None
    timeline: int | None
    resident: int | None
    error: float | None
    within: bool
    status: str  # "ok", or the first failing side's status ("fake oom", "cuda error", ...)
    message: str = ""


def configs(args: argparse.Namespace) -> list[tuple[ProfileConfig, ProfileConfig]]:
    """(fake, measured) configuration pairs, all validated before anything runs."""
    pairs = []
    for backbone in args.backbones:
        for method in args.methods:
            for seq in args.seq_lens:
                common = dict(
                    backbone=backbone, method=method, seq_len=seq, batch_size=args.batch_size, dtype=args.dtype
                )
                pairs.append(
                    (
                        ProfileConfig(**common, engine="fake", target=args.measured),
                        ProfileConfig(**common, engine=args.measured),
                    )
                )
    return pairs


def _profile(config: ProfileConfig, cache: ModelCache) -> Result:
    """``run``, with any failure a Result (one script run must survive a configuration that fails)."""
    try:
        return run(config, cache)
    except Exception as exc:  # noqa: BLE001 -- recorded in the row and in results.json
        return failed_result(config, exc, device_name=config.engine)


def _row(fake: Result, real: Result, resident: int | None, tolerance: float) -> Row:
    key = dict(
        backbone=real.backbone, method=real.method, seq_len=real.seq_len, batch_size=real.batch_size, dtype=real.dtype
    )
    failed = next((r for r in (fake, real) if r.status != "ok"), None)
    if failed is not None:
        return Row(
            **key,
            predicted=None,
            measured=None,
            timeline=None,
            resident=resident,
            error=None,
            within=False,
            status=f"{failed.engine} {failed.status}",
            message=failed.message,
        )
    measured = real.memory.cuda_max_allocated if real.engine == "cuda" else real.memory.peak
    error = fake.memory.peak / measured - 1
    return Row(
        **key,
        predicted=fake.memory.peak,
        measured=measured,
        timeline=real.memory.peak,
        resident=resident,
        error=error,
        within=abs(error) <= tolerance,
        status="ok",
    )


def _free_device() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def validate(
    pairs: list[tuple[ProfileConfig, ProfileConfig]], tolerance: float = TOLERANCE, echo=print
) -> tuple[list[Row], list[Result]]:
    """Profile every pair (one model per backbone and method on each side, reused across lengths)."""
    rows, results = [], []
    fake_cache, real_cache = ModelCache(), ModelCache()
    model = None
    for fake_config, real_config in pairs:
        if ModelCache.key(real_config) != model:  # another model: free the last one before building it
            model = ModelCache.key(real_config)
            real_cache.clear()
            fake_cache.clear()
            _free_device()
        fake = _profile(fake_config, fake_cache)
        real = _profile(real_config, real_cache)
        resident = int(torch.cuda.memory_allocated()) if real_config.engine == "cuda" else None
        rows.append(_row(fake, real, resident, tolerance))
        results += [fake, real]
        echo(table_line(rows[-1], tolerance))
    return rows, results


def _mib(n: int | None) -> str:
    return "" if n is None else f"{n / MIB:,.1f}"


def table_head(measured: str, tolerance: float) -> list[str]:
    what = "cuda max_memory_allocated" if measured == "cuda" else "cpu engine peak"
    return [
        f"| backbone | method | seq | batch | dtype | predicted (fake, target {measured}) MiB "
        f"| measured ({what}) MiB | error | within {tolerance:.0%} | timeline ({measured} engine) MiB "
        "| resident after MiB | status |",
        "|---|---|---:|---:|---|---:|---:|---:|---|---:|---:|---|",
    ]


def table_line(row: Row, tolerance: float) -> str:
    error = "" if row.error is None else f"{row.error:+.2%}"
    status = row.status if not row.message else f"{row.status}: {row.message}"
    return (
        f"| {row.backbone} | {row.method} | {row.seq_len} | {row.batch_size} | {row.dtype} | {_mib(row.predicted)} "
        f"| {_mib(row.measured)} | {error} | {'yes' if row.within else 'no'} | {_mib(row.timeline)} "
        f"| {_mib(row.resident)} | {status} |"
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    split = lambda text: [s.strip() for s in text.split(",") if s.strip()]  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", type=split, default=list(BACKBONES), help="comma-separated")
    parser.add_argument("--methods", type=split, default=list(METHODS), help="comma-separated")
    parser.add_argument("--seq-lens", type=lambda t: [int(s) for s in split(t)], default=list(SEQ_LENS))
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument(
        "--measured",
        choices=("cuda", "cpu"),
        default="cuda",
        help="engine of the measured side; the fake engine targets the same device",
    )
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    parser.add_argument("--out", type=Path, default=Path("reports/gpu-validate"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Row]:
    """Run, print the table, write the files; exits with the one-line message on bad input."""
    args = parse(argv)
    try:
        pairs = configs(args)
        args.out.mkdir(parents=True, exist_ok=True)
    except (MemprofError, OSError) as exc:
        raise SystemExit(f"gpu_validate: {exc}") from None
    start = time.perf_counter()
    head = table_head(args.measured, args.tolerance)
    print("\n".join(head), flush=True)
    rows, results = validate(pairs, args.tolerance, echo=lambda line: print(line, flush=True))
    seconds = time.perf_counter() - start
    env = environment(torch.cuda.get_device_name() if args.measured == "cuda" else "cpu")
    command = " ".join(["python benchmarks/gpu_validate.py", *(argv if argv is not None else sys.argv[1:])])
    met = sum(r.within for r in rows)
    summary = f"{met} of {len(rows)} configurations within {args.tolerance:.0%}; {seconds:.0f} s"
    print(summary)
    (args.out / "gpu_validate.json").write_text(
        json.dumps(
            {
                "command": command,
                "environment": env,
                "tolerance": args.tolerance,
                "seconds": seconds,
                "rows": [asdict(r) for r in rows],
            },
            indent=1,
        )
        + "\n"
    )
    lines = [
        f"`{command}` ({env['device']}, torch {env['torch']}): {summary}",
        "",
        *head,
        *(table_line(r, args.tolerance) for r in rows),
    ]
    (args.out / "gpu_validate.md").write_text("\n".join(lines) + "\n")
    write_json(ResultSet(results, command=command, options={"tolerance": args.tolerance}), args.out / "results.json")
    return rows


if __name__ == "__main__":
    main()
