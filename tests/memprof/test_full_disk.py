"""A full disk (ENOSPC injected where a file is renamed into place, or where the sweep's journal is
appended) while a sweep runs and while its report is written: nothing already on disk is lost or
truncated, and one line says what is kept and the command that finishes the job."""

import errno
import os
import re
from pathlib import Path

import pytest

from memprof.results.files import WriteFailed
from memprof.results.result import load_results
from memprof.sweep.resume import Journal

SMALL = ["--methods", "ft,lora,adapter", "--seq-lens", "128,256", "--batch-sizes", "2,4"]
FULL = os.strerror(errno.ENOSPC)
REPLACE = os.replace


def disk_full_for(monkeypatch, name: str) -> None:
    """Every rename into a file called ``name`` fails as on a full disk."""

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == name:
            raise OSError(errno.ENOSPC, FULL)
        return REPLACE(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "name, written, left",
    [
        ("report.html", {"results.csv", "layers.csv", "layers_largest.png", "timeline.png"}, "html, markdown"),
        ("layers_largest.png", {"results.csv", "layers.csv"}, "plots, html, markdown"),
        ("results.csv", set(), "table, plots, html, markdown"),
    ],
)
def test_a_full_disk_while_rendering_keeps_every_old_file_and_says_how_to_finish(
    cli, monkeypatch, tmp_path, name, written, left
):
    assert cli("compare", *SMALL, "--out", "run", "--quiet")[0] == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    disk_full_for(monkeypatch, name)
    code, out, err = cli("report", "run/results.json", "--quiet")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    said = re.fullmatch(
        rf"error: cannot write '(.+)' \({FULL}\); the results in 'run/results.json' are complete; "
        r"(?:written: (.+); )?not written: the (.+) views; free some space, then write them with: "
        r"memprof report run/results.json",
        err.strip(),
    )
    assert said is not None, err
    assert said[1] == f"run/{name}" and said[3] == left
    assert written <= set((said[2] or "").split(", ")) and name not in (said[2] or "")
    assert (tmp_path / "run" / name).read_bytes() == before[name]  # the old file, whole
    assert no_temporaries(tmp_path / "run")
    monkeypatch.setattr(os, "replace", REPLACE)
    code, out, err = cli("report", "run/results.json", "--quiet")  # room again: the command it named works
    assert code == 0, err


def test_a_full_disk_mid_sweep_keeps_the_results_so_far_and_resume_finishes(cli, monkeypatch, tmp_path, stub_plots):
    real, calls = Journal.append, []

    def append(self, line):
        calls.append(line)
        if len(calls) == 3:
            raise WriteFailed(self.path, OSError(errno.ENOSPC, FULL))
        return real(self, line)

    monkeypatch.setattr(Journal, "append", append)
    code, out, err = cli("compare", *SMALL, "--out", "run", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.strip() == (
        f"error: cannot write 'run/.results.journal' ({FULL}); the 2 of 12 results written before it are valid in "
        "'run'; free some space, then finish the sweep with: memprof compare --resume run"
    )
    assert len(load_results(tmp_path / "run" / "results.json").results) == 2
    monkeypatch.setattr(Journal, "append", real)
    code, out, err = cli("compare", "--resume", "run", "--quiet")
    assert code == 0, err
    assert cli("compare", *SMALL, "--out", "whole", "--quiet")[0] == 0
    resumed, whole = (load_results(tmp_path / f / "results.json").results for f in ("run", "whole"))
    assert [(r.key, r.memory) for r in resumed] == [(r.key, r.memory) for r in whole]
