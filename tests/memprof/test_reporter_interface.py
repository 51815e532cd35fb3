"""The reporter interface (NOTE [ One reporter interface ]): every listed reporter has ``write``, and
a new one is one module plus one entry in ``REPORTERS``."""

from __future__ import annotations

import importlib
import inspect
import sys
import types

from synthetic_results import golden_resultset

import memprof.reporters as reporters
from memprof.reporters.base import Extras


def test_every_listed_reporter_has_write():
    for name in reporters.REPORTERS:
        write = importlib.import_module(f"memprof.reporters.{name}").write
        assert list(inspect.signature(write).parameters) == ["rs", "out", "extras"], name


def test_a_new_reporter_is_one_module_and_one_entry(tmp_path, monkeypatch):
    seen = []

    def write(rs, out, extras):
        seen.append((len(rs.results), out, extras))
        (out / "count.txt").write_text(str(len(rs.results)))
        return {"count.txt": out / "count.txt"}

    module = types.ModuleType("memprof.reporters.count")
    module.write = write
    monkeypatch.setitem(sys.modules, "memprof.reporters.count", module)
    monkeypatch.setattr(reporters, "REPORTERS", (*reporters.REPORTERS, "count"))
    rs = golden_resultset()
    paths = reporters.render_all(rs, tmp_path)
    assert seen == [(len(rs.results), tmp_path, Extras())]
    assert (tmp_path / "count.txt").read_text() == str(len(rs.results))
    assert {"count.txt", "report.html", "summary.md", "results.csv", "layers.csv"} <= set(paths)
