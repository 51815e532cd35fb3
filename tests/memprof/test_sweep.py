"""The compare sweep: grid validation, incremental atomic writes, failures recorded, resume after
Ctrl-C giving the same results.json as an uninterrupted run. The engine is injected."""

import json
import os
from datetime import datetime

import pytest
import torch
from synthetic_results import fake_run

from memprof import methods
from memprof.errors import MemprofError
from memprof.results.result import config_key, load_results
from memprof.sweep import grid as sweep_grid
from memprof.sweep import run as sweep
from memprof.sweep.resume import recorded

SMALL = dict(backbone="bart-large", methods=["ft", "lora", "adapter"], seq_lens=[128, 256], batch_sizes=[2, 4])


def grid(**kw):
    return sweep_grid.Grid(**{**SMALL, **kw})


# --- parsing and validation -------------------------------------------------------------------


def test_parse_lists():
    assert sweep_grid.parse_methods(" ft, lora ") == ["ft", "lora"]
    every = sweep_grid.parse_methods(" all ")
    assert every == [m for m in methods.names() if methods.get(m).alias_of is None]
    assert {"ft", "lora", "meft1"} <= set(every) and "meft" not in every  # an alias profiles what it stands for
    assert sweep_grid.parse_ints("128, 256,512", "sequence length", "--seq-lens") == [128, 256, 512]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("ft,,lora", "empty entry"),
        ("ft,ft", "'ft' is listed twice"),
        ("ft,nope", "unknown method 'nope'"),
        ("all,ft", "unknown method 'all'"),  # 'all' is the whole list or nothing
    ],
)
def test_bad_methods(text, fragment):
    with pytest.raises(MemprofError, match=fragment):
        sweep_grid.parse_methods(text)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("128,x", "'x' in --seq-lens '128,x' is not a whole number"),
        ("1.5", "not a whole number"),
        ("0", "must be a whole number of at least 1"),
        ("-8", "at least 1"),
        ("128,128", "listed twice"),
    ],
)
def test_bad_ints(text, fragment):
    with pytest.raises(MemprofError, match=fragment):
        sweep_grid.parse_ints(text, "sequence length", "--seq-lens")


@pytest.mark.parametrize(
    "kw, fragment",
    [
        (dict(methods=[]), "method list is empty"),
        (dict(methods=["ft", "ft"]), "listed twice"),
        (dict(seq_lens=[]), "sequence length list is empty"),
        (dict(batch_sizes=[0]), "batch size 0"),
        (dict(seq_lens=[4096]), "exceeds bart-large's maximum of 1024"),
        (dict(engine="gpu"), "unknown engine"),
        (dict(dtype="fp8"), "unknown dtype"),
    ],
)
def test_bad_grid(kw, fragment):
    with pytest.raises(MemprofError, match=fragment):
        grid(**kw)


def test_grid_configs_method_major_and_options():
    g = grid()
    configs = g.configs()
    assert len(configs) == 12
    assert [(c.method, c.batch_size, c.seq_len) for c in configs[:4]] == [
        ("ft", 2, 128),
        ("ft", 2, 256),
        ("ft", 4, 128),
        ("ft", 4, 256),
    ]
    assert g.target == "cuda" and g.task == "classification"  # resolved as ProfileConfig does
    assert g.options() == {
        "backbone": "bart-large",
        "methods": ["ft", "lora", "adapter"],
        "seq_lens": [128, 256],
        "batch_sizes": [2, 4],
        "engine": "fake",
        "target": "cuda",
        "dtype": "fp32",
        "attn": "sdpa",
        "task": "classification",
        "step": "first",
        "loss": "full",
    }
    assert sweep_grid.Grid.from_options(g.options()) == g
    assert g.command() == (
        "memprof compare --backbone bart-large --methods ft,lora,adapter --seq-lens 128,256 "
        "--batch-sizes 2,4 --engine fake --target cuda --dtype fp32 --attn sdpa --task classification"
    )


def test_defaults_are_the_issue_grid():
    assert sweep_grid.DEFAULTS["backbone"] == "bart-large"
    assert sweep_grid.DEFAULTS["methods"] == ["ft", "lora", "meft"]
    assert sweep_grid.DEFAULTS["seq_lens"] == [128, 256, 512] and sweep_grid.DEFAULTS["batch_sizes"] == [8, 16, 32]
    assert sweep_grid.DEFAULTS["engine"] == "fake"
    if "meft" in methods.names():
        assert len(sweep_grid.Grid().configs()) == 27


# --- running ------------------------------------------------------------------------------------


def test_sweep_writes_every_result_in_grid_order(tmp_path):
    g = grid()
    rs = sweep.run_sweep(g, tmp_path, run=fake_run)
    saved = load_results(tmp_path / "results.json")
    assert [r.key for r in saved.results] == [config_key(c) for c in g.configs()]
    assert saved.command == g.command() and saved.options == {**g.options(), **sweep.provenance(g)}
    assert [r.to_dict() for r in rs.results] == [r.to_dict() for r in saved.results]


def test_results_are_written_as_each_configuration_finishes(tmp_path):
    seen = []

    def run(config, cache):
        seen.append(len(recorded(tmp_path).results))  # results.json and the journal
        return fake_run(config)

    sweep.run_sweep(grid(), tmp_path, run=run)
    assert seen == list(range(12))
    assert not list(tmp_path.glob("*.tmp"))


def test_failures_are_recorded_and_the_sweep_goes_on(tmp_path):
    failures = {
        ("lora", 128, 2): RuntimeError("shape mismatch\nsecond line"),
        ("lora", 256, 4): torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        ("adapter", 256, 4): MemoryError(),
    }

    def run(config, cache):
        exc = failures.get((config.method, config.seq_len, config.batch_size))
        if exc:
            raise exc
        return fake_run(config)

    rs = sweep.run_sweep(grid(), tmp_path, run=run)
    by = {(r.method, r.seq_len, r.batch_size): r for r in rs.results}
    assert len(rs.results) == 12
    assert (by[("lora", 128, 2)].status, by[("lora", 128, 2)].message) == ("error", "RuntimeError: shape mismatch")
    assert (by[("lora", 256, 4)].status, by[("lora", 256, 4)].message) == (
        "oom",
        "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
    )
    assert (by[("adapter", 256, 4)].status, by[("adapter", 256, 4)].message) == ("oom", "MemoryError")
    assert by[("lora", 128, 2)].key == ("bart-large", "lora", 128, 2, "fp32", "fake", "cuda", "first", "full")
    assert sum(r.status == "ok" for r in rs.results) == 9


def test_the_cache_is_passed_to_every_run(tmp_path):
    cache, seen = object(), []
    sweep.run_sweep(grid(), tmp_path, run=lambda c, k: seen.append(k) or fake_run(c), cache=cache)
    assert seen == [cache] * 12


class Interrupt:
    """A run function that raises KeyboardInterrupt at configuration ``at`` (0-based)."""

    def __init__(self, at):
        self.at, self.calls = at, 0

    def __call__(self, config, cache):
        if self.calls == self.at:
            raise KeyboardInterrupt
        self.calls += 1
        return fake_run(config)


@pytest.mark.parametrize("k", [0, 1, 5, 11])
def test_interrupt_then_resume_equals_an_uninterrupted_run(tmp_path, k):
    sweep.run_sweep(grid(), tmp_path / "full", run=fake_run)
    with pytest.raises(sweep.SweepInterrupted) as stop:
        sweep.run_sweep(grid(), tmp_path / "cut", run=Interrupt(k))
    assert (stop.value.done, stop.value.total, stop.value.out_dir) == (k, 12, tmp_path / "cut")
    partial = json.loads((tmp_path / "cut" / "results.json").read_text())  # valid JSON
    assert len(partial["results"]) == k

    counted = []
    sweep.run_sweep(grid(), tmp_path / "cut", resume=True, run=lambda c, cache: counted.append(c) or fake_run(c))
    assert len(counted) == 12 - k  # only what was missing ran
    full = json.loads((tmp_path / "full" / "results.json").read_text())
    resumed = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert resumed == full
    assert (tmp_path / "cut" / "results.json").read_bytes() == (tmp_path / "full" / "results.json").read_bytes()


def test_resume_skips_failures_already_recorded(tmp_path):
    def fail_lora(config, cache):
        if config.method == "lora":
            raise RuntimeError("boom")
        return fake_run(config)

    sweep.run_sweep(grid(), tmp_path, run=fail_lora)
    calls = []
    rs = sweep.run_sweep(grid(), tmp_path, resume=True, run=lambda c, k: calls.append(c) or fake_run(c))
    assert calls == [] and sum(r.status == "error" for r in rs.results) == 4


def test_resume_needs_the_same_grid_and_the_file(tmp_path):
    sweep.run_sweep(grid(), tmp_path, run=fake_run)
    with pytest.raises(MemprofError, match=r"was swept with seq_lens=\[128, 256\], not \[128\]"):
        sweep.run_sweep(grid(seq_lens=[128]), tmp_path, resume=True, run=fake_run)
    with pytest.raises(MemprofError, match="does not exist"):
        sweep.run_sweep(grid(), tmp_path / "elsewhere", resume=True, run=fake_run)


def test_output_directory_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(MemprofError, match="is a file"):
        sweep.run_sweep(grid(), tmp_path / "f", run=fake_run)
    with pytest.raises(MemprofError, match="part of its path is a file"):
        sweep.run_sweep(grid(), tmp_path / "f" / "sub", run=fake_run)


# --- output folders -------------------------------------------------------------------------------


def test_default_out_dir_and_latest(tmp_path):
    now = datetime(2025, 1, 2, 3, 4, 5)
    first = sweep.default_out_dir("bart-large", tmp_path, now)
    assert first == tmp_path / "bart-large-20250102-030405"
    first.mkdir()
    assert sweep.default_out_dir("bart-large", tmp_path, now).name == "bart-large-20250102-030405-2"
    assert sweep.default_out_dir("/x/my config.json", tmp_path, now).name == "x-my-config.json-20250102-030405"
    latest = sweep.point_latest(first)
    assert latest.is_symlink() and os.readlink(latest) == first.name and latest.resolve() == first.resolve()
    second = tmp_path / "second"
    second.mkdir()
    sweep.point_latest(second)
    assert os.readlink(latest) == "second"


def test_latest_falls_back_to_a_file(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()

    def no_symlinks(*a, **k):
        raise OSError("symlinks not supported")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    latest = sweep.point_latest(out)
    assert not latest.is_symlink() and latest.read_text() == "run\n"


# --- parallel sweeps ------------------------------------------------------------------------------


def flaky_run(config, cache):
    """Picklable for worker processes: lora fails at (128, 2); the worker dies at adapter (256, 4)."""
    if (config.method, config.seq_len, config.batch_size) == ("lora", 128, 2):
        raise RuntimeError("boom")
    if (config.method, config.seq_len, config.batch_size) == ("adapter", 256, 4):
        os._exit(3)
    return fake_run(config)


def test_parallel_sweep_matches_serial_and_survives_a_dead_worker(tmp_path):
    g = grid()
    serial = sweep.run_sweep(
        g, tmp_path / "serial", run=lambda c, k: flaky_run(c, k) if c.method == "lora" else fake_run(c)
    )
    parallel = sweep.run_sweep(g, tmp_path / "parallel", run=flaky_run, jobs=2)
    assert [r.key for r in parallel.results] == [r.key for r in serial.results]  # grid order
    for s, p in zip(serial.results, parallel.results):
        if p.key[1:4] == ("adapter", 256, 4):
            assert (p.status, p.message) == (
                "error",
                "worker died (exit code 3) while profiling this configuration; memprof compare --resume retries it",
            )
        else:
            assert p.to_dict() == s.to_dict()
    assert [r.status for r in parallel.results].count("error") == 2


def test_parallel_falls_back_to_one_process_when_run_cannot_be_pickled(tmp_path):
    rs = sweep.run_sweep(grid(), tmp_path / "p", run=lambda c, k: fake_run(c), jobs=2)
    serial = sweep.run_sweep(grid(), tmp_path / "s", run=fake_run)
    assert [r.to_dict() for r in rs.results] == [r.to_dict() for r in serial.results]


def test_auto_jobs():
    assert sweep.auto_jobs(grid(engine="cpu", target="cpu")) == 1
    assert 1 <= sweep.auto_jobs(grid()) <= 3
    assert sweep.auto_jobs(grid(methods=["ft"])) == 1


def tiny_bart(tmp_path):
    from memprof.models.backbones import builtin

    cfg = {
        **builtin()["bart-base"],
        "d_model": 32,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
        "vocab_size": 128,
    }
    path = tmp_path / "tiny-bart.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def real_grid(tmp_path):
    return sweep_grid.Grid(backbone=tiny_bart(tmp_path), methods=["ft", "lora"], seq_lens=[16, 32], batch_sizes=[2])


def test_real_fake_engine_sweep(tmp_path):
    """The one real sweep: a tiny BART (from a config path) on the fake engine, each model built
    once per method."""
    engines = pytest.importorskip("memprof.engines")
    cache = engines.ModelCache()
    rs = sweep.run_sweep(real_grid(tmp_path), tmp_path / "serial", cache=cache)
    assert cache.builds == 2
    assert [r.status for r in rs.results] == ["ok"] * 4, [r.message for r in rs.results]
    assert [r.key[:4] for r in rs.results] == [("tiny-bart", m, s, 2) for m in ("ft", "lora") for s in (16, 32)]
    saved = {(r.method, r.seq_len): r.memory.saved_activations for r in rs.results}
    assert saved[("ft", 32)] > saved[("ft", 16)] > 0 and saved[("ft", 32)] > saved[("lora", 32)]


@pytest.mark.slow
@pytest.mark.long  # every day: parallel sweeps with injected runs (above), real workers in test_signals.py
def test_real_fake_engine_sweep_parallel_equals_serial(tmp_path):
    """Two spawned worker processes, each with its own ModelCache, write the same results.json as
    one process (step times aside)."""
    pytest.importorskip("memprof.engines")
    sweep.run_sweep(real_grid(tmp_path), tmp_path / "serial")
    sweep.run_sweep(real_grid(tmp_path), tmp_path / "parallel", jobs=2)

    def strip(path):
        data = json.loads(path.read_text())
        for r in data["results"]:
            r["step_time_s"] = None
        return data

    assert strip(tmp_path / "parallel" / "results.json") == strip(tmp_path / "serial" / "results.json")
