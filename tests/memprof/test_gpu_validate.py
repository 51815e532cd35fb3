"""benchmarks/gpu_validate.py end to end on the cpu engine (fake, target cpu, against the cpu engine: equal
to the byte, as tests/memprof/test_engines.py asserts for every family and method), its files, and how it
judges a configuration (the goal, a failure, the cuda figure it reads)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import memprof
from memprof.models import backbones
from memprof.results.result import Memory, Result, load_results
from tests.memprof.conftest import TINY_BERT

_spec = importlib.util.spec_from_file_location(
    "gpu_validate", Path(__file__).parents[2] / "benchmarks" / "gpu_validate.py"
)
gpu_validate = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = gpu_validate  # dataclasses look their module up there
_spec.loader.exec_module(gpu_validate)

B, SEQS, METHODS = 2, (8, 16), ("ft", "lora", "meft1")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """bert-base's config at two layers of width 16 (vocabulary 64)."""
    path = tmp_path_factory.mktemp("tiny") / "tiny-bert.json"
    path.write_text(json.dumps({**backbones.builtin()["bert-base"], **TINY_BERT}))
    return str(path)


@pytest.fixture(scope="module")
def validated(tiny_bert, tmp_path_factory):
    """(rows, printed text, out folder) of one run of the script's main on the cpu engine."""
    out = tmp_path_factory.mktemp("gpu-validate")
    argv = [
        "--measured",
        "cpu",
        "--backbones",
        tiny_bert,
        "--methods",
        ",".join(METHODS),
        "--seq-lens",
        ",".join(map(str, SEQS)),
        "--batch-size",
        str(B),
        "--out",
        str(out),
    ]
    capture = pytest.MonkeyPatch()
    lines = []
    capture.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
    try:
        rows = gpu_validate.main(argv)
    finally:
        capture.undo()
    return rows, "\n".join(lines), out


def test_every_configuration_is_predicted_to_the_byte_on_the_cpu_engine(validated):
    rows, _, _ = validated
    assert [(r.method, r.seq_len) for r in rows] == [(m, s) for m in METHODS for s in SEQS]
    for r in rows:
        assert (r.status, r.batch_size, r.dtype) == ("ok", B, "fp32")
        assert r.predicted == r.measured == r.timeline > 0
        assert r.error == 0.0 and r.within and r.resident is None


def test_the_numbers_are_the_engines_own(validated, tiny_bert):
    rows, _, _ = validated
    row = next(r for r in rows if (r.method, r.seq_len) == ("meft1", 16))
    fake = memprof.profile(tiny_bert, "meft1", seq_len=16, batch_size=B, engine="fake", target="cpu")
    cpu = memprof.profile(tiny_bert, "meft1", seq_len=16, batch_size=B, engine="cpu")
    assert (row.predicted, row.measured) == (fake.memory.peak, cpu.memory.peak)
    # Different methods, different peaks: each row is its own configuration's.
    assert len({r.predicted for r in rows if r.seq_len == 16}) == len(METHODS)


def test_it_writes_the_rows_the_table_and_every_result(validated):
    rows, printed, out = validated
    data = json.loads((out / "gpu_validate.json").read_text())
    assert data["tolerance"] == 0.05 and data["environment"]["device"] == "cpu"
    assert data["command"].startswith("python benchmarks/gpu_validate.py --measured cpu")
    assert [tuple(r.values()) for r in data["rows"]] == [tuple(vars(r).values()) for r in rows]
    table = (out / "gpu_validate.md").read_text().splitlines()
    assert table[0].endswith(f"{len(rows)} of {len(rows)} configurations within 5%; {round(data['seconds'])} s")
    assert table[2:] == printed.splitlines()[:-1] and len(table) == 4 + len(rows)
    assert printed.splitlines()[-1].startswith(f"{len(rows)} of {len(rows)} configurations within 5%")
    results = load_results(out / "results.json").results
    assert [(r.engine, r.target) for r in results] == [("fake", "cpu"), ("cpu", "cpu")] * len(rows)
    assert [r.memory.peak for r in results[::2]] == [row.predicted for row in rows]


def _result(engine, peak, status="ok", cuda_max_allocated=None):
    return Result(
        backbone="b",
        method="lora",
        engine=engine,
        target="cuda",
        dtype="fp32",
        attn_implementation="sdpa",
        seq_len=128,
        batch_size=8,
        status=status,
        message="" if status == "ok" else "OutOfMemoryError: x",
        memory=Memory(peak=peak, cuda_max_allocated=cuda_max_allocated),
    )


def test_a_configuration_is_judged_by_the_allocator_peak_against_the_tolerance():
    # On cuda the measured side is max_memory_allocated; the engine's own timeline peak is kept beside it.
    row = gpu_validate._row(_result("fake", 1_045), _result("cuda", 990, cuda_max_allocated=1_000), 7, 0.05)
    assert (row.predicted, row.measured, row.timeline, row.resident) == (1_045, 1_000, 990, 7)
    assert row.error == pytest.approx(0.045) and row.within
    row = gpu_validate._row(_result("fake", 940), _result("cuda", 990, cuda_max_allocated=1_000), 7, 0.05)
    assert row.error == pytest.approx(-0.06) and not row.within
    row = gpu_validate._row(_result("fake", 1_000), _result("cuda", 0, status="oom"), None, 0.05)
    assert (row.status, row.message, row.within, row.error, row.predicted) == (
        "cuda oom",
        "OutOfMemoryError: x",
        False,
        None,
        None,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_measuring_on_cuda_without_a_gpu_stops_before_any_work(tmp_path, tiny_bert):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as stop:
        gpu_validate.main(["--backbones", tiny_bert, "--seq-lens", "8", "--out", str(out)])
    assert str(stop.value).startswith("gpu_validate: engine 'cuda' needs a CUDA GPU and none is visible")
    assert not out.exists()
