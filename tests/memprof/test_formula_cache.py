"""The formula cache: its folder, its key, and that nothing it holds can stop or fool a run."""

import json
import multiprocessing
from dataclasses import replace
from unittest import mock

import pytest

from memprof.engines import formula_cache
from memprof.engines.config import ProfileConfig
from memprof.engines.formula_cache import FormulaCache, cache_key, default_folder
from memprof.results.formula import Formula
from memprof.results.polynomial import Poly

B, S = Poly.var("b"), Poly.var("s")
CONFIG = ProfileConfig(backbone="bert-base", method="lora", batch_size=4, seq_len=64)


def formula(peak: int = 100) -> Formula:
    return Formula(
        backbone="bert-base",
        method="lora",
        task="classification",
        dtype="fp32",
        target="cuda",
        attn_implementation="eager",
        how="symbolic",
        trainable_params=10,
        total_params=20,
        sums={"parameters": Poly.const(80), "saved_activations": B * S * 12, "unattributed": Poly()},
        peaks=[
            {
                "peak": B * S * 12 + peak,
                "gradients": Poly.const(8),
                "optimizer_state": Poly(),
                "temporaries": Poly(),
                "activations_at_peak": B * S * 12,
            }
        ],
        peak_activations=[B * S * 12],
        layers=[("encoder.layer.0", {"linear_input": B * S * 12})],
    )


def test_the_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("MEMPROF_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_folder() == tmp_path / "xdg" / "memprof" / "formulas"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # the XDG spec: a relative one is ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_folder() == tmp_path / "home" / ".cache" / "memprof" / "formulas"
    monkeypatch.setenv("MEMPROF_CACHE_DIR", str(tmp_path / "mine"))
    assert default_folder() == tmp_path / "mine"


def test_the_key_holds_what_changes_the_bytes_and_nothing_else():
    path = FormulaCache("/c").path(CONFIG)
    assert FormulaCache("/c").path(replace(CONFIG, batch_size=9, seq_len=99, seed=7)) == path
    for changed in (
        replace(CONFIG, method="ft"),
        replace(CONFIG, dtype="bf16"),
        replace(CONFIG, step="steady"),
        replace(CONFIG, attn="eager"),
        replace(CONFIG, dtype="fp16"),
        replace(CONFIG, target="cpu"),
    ):
        assert FormulaCache("/c").path(changed) != path, changed
    deeper = replace(
        CONFIG, resolved=replace(CONFIG.resolved, config={**CONFIG.resolved.config, "num_hidden_layers": 3})
    )
    assert FormulaCache("/c").path(deeper) != path
    key = cache_key(CONFIG)
    assert set(key["versions"]) == {"memprof-meft", "torch", "transformers", "peft"}
    with mock.patch.object(formula_cache, "_version", lambda dist: "other"):
        assert FormulaCache("/c").path(CONFIG) != path  # a new torch, transformers, peft or memprof misses
    assert len(key["source_sha256"]) == 64
    with mock.patch.object(formula_cache, "source_digest", lambda: "edited"):
        assert FormulaCache("/c").path(CONFIG) != path  # so does an edit to memprof's or meft's code


def test_a_stored_formula_comes_back_equal(tmp_path):
    cache = FormulaCache(tmp_path)
    assert cache.get(CONFIG) is None
    cache.put(CONFIG, formula(), CONFIG)
    got = cache.get(CONFIG)
    assert got.to_dict() == formula().to_dict()
    assert cache.lookup(CONFIG)[1] == (4, 64)  # where its check profiled
    cache.discard(CONFIG)
    assert cache.get(CONFIG) is None and not list(tmp_path.iterdir())
    off = FormulaCache(None)  # --no-cache: no folder, so nothing to read or write
    assert off.path(CONFIG) is None and off.get(CONFIG) is None


@pytest.mark.parametrize(
    "text, why",
    [
        ("{not json", "expecting"),
        ("", "expecting"),
        ('{"key": 1, "key": 2}', "twice"),
        ("[1, 2]", "another configuration"),
        ('{"key": {}, "formula": {}}', "another configuration"),
    ],
)
def test_a_corrupt_entry_is_recomputed_with_one_warning(tmp_path, capsys, text, why):
    cache = FormulaCache(tmp_path)
    path = cache.path(CONFIG)
    path.write_text(text)
    assert cache.get(CONFIG) is None and cache.get(CONFIG) is None  # asked twice, warned once
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"warning: ignoring the formula cache entry {str(path)!r} (")
    assert why in err.lower() and err.rstrip().endswith("recomputing it")
    cache.put(CONFIG, formula(), CONFIG)  # replaced by the recomputed formula
    assert cache.get(CONFIG).to_dict() == formula().to_dict() and capsys.readouterr().err == ""


def test_an_entry_that_is_not_a_formula_is_recomputed(tmp_path, capsys):
    cache = FormulaCache(tmp_path)
    cache.put(CONFIG, formula(), CONFIG)
    path = cache.path(CONFIG)
    entry = json.loads(path.read_text())
    entry["formula"]["formula_version"] = 99
    path.write_text(json.dumps(entry))
    assert cache.get(CONFIG) is None and "formula_version 99 is not 1" in capsys.readouterr().err


def test_a_folder_that_cannot_be_written_warns_once_and_the_run_goes_on(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    cache = FormulaCache(blocker / "formulas")
    cache.probe()  # compare probes once, before its workers get copies
    cache.put(CONFIG, formula(), CONFIG)
    cache.put(replace(CONFIG, method="ft"), formula(), CONFIG)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write the formula cache in" in err and "MEMPROF_CACHE_DIR" in err
    assert cache.get(CONFIG) is None


def _fill(folder: str, peak: int, times: int) -> None:
    cache = FormulaCache(folder)
    for _ in range(times):
        cache.put(CONFIG, formula(peak), CONFIG)


def test_two_processes_filling_one_entry_leave_a_whole_one(tmp_path, capsys):
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_fill, args=(str(tmp_path), peak, 60)) for peak in (100, 200)]
    for w in writers:
        w.start()
    cache, seen = FormulaCache(tmp_path), set()
    while any(w.is_alive() for w in writers):
        got = cache.get(CONFIG)
        if got is not None:
            seen.add(got.peaks[0]["peak"](1, 1) - 12)
    for w in writers:
        w.join()
        assert w.exitcode == 0
    final = cache.get(CONFIG)
    assert final is not None and final.peaks[0]["peak"](1, 1) - 12 in (100, 200)
    assert seen and seen <= {100, 200} and capsys.readouterr().err == ""  # never a torn or mixed entry
    assert [p.name for p in tmp_path.iterdir()] == [cache.path(CONFIG).name]  # no temporary file left
