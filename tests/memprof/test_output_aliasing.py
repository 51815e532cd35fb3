"""Outputs never alias inputs (NOTE [Outputs never alias inputs] in memprof/outputs.py): every
command that writes refuses, before any work and in one line, an output that is one of its inputs
or another of its outputs, symlinks resolved; ``profile --json`` replaces only a single-profile
result; ``baseline --out`` never replaces another sweep's per-layer results."""

import dataclasses
import json
import os

import pytest

import memprof.engines
import memprof.fit.search
from memprof.errors import MemprofError
from memprof.outputs import check_distinct
from memprof.results.result import ResultSet, empty_layers, load_results, write_json
from tests.memprof.conftest import TINY_OPT
from tests.memprof.test_cli_check import cli, result

pytestmark = pytest.mark.usefixtures("stub_plots")


@pytest.fixture
def no_profiling(monkeypatch):
    """Fails the test if anything is profiled: the refusals come before the work."""

    def refuse(config, cache=None):
        raise AssertionError(f"profiled {config} although the command should have refused first")

    monkeypatch.setattr(memprof.engines, "run", refuse)
    monkeypatch.setattr(memprof.fit.search, "run", refuse)


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """In tmp_path (the working folder): a sweep ``run/`` with per-layer rows, a baseline, a single
    result, a backbone config, a report folder whose results file is named summary.md, and symlinks."""
    monkeypatch.chdir(tmp_path)
    os.mkdir("run")
    write_json(ResultSet([result(), result("lora")], command="memprof compare"), tmp_path / "run" / "results.json")
    os.mkdir("other")
    write_json(ResultSet([result("adapter")], command="memprof compare"), tmp_path / "other" / "results.json")
    write_json(ResultSet([result()], options={"baseline_layers": "stripped"}), tmp_path / "base.json")
    write_json(result(), tmp_path / "one.json")
    (tmp_path / "cfg.json").write_text(json.dumps(TINY_OPT))
    os.mkdir("rep")
    write_json(ResultSet([result()]), tmp_path / "rep" / "summary.md")
    (tmp_path / "plot.png").write_bytes(b"an earlier plot")
    os.symlink("base.json", "base-link.md")
    os.symlink("run", "run-link")
    os.symlink(".", "here")
    return tmp_path


def snapshot(root):
    """Every file's bytes under ``root`` (through no symlink), to compare before and after."""
    return {
        os.path.join(d, f): open(os.path.join(d, f), "rb").read()
        for d, _, names in os.walk(root)
        for f in names
        if not os.path.islink(os.path.join(d, f))
    }


ALIASES = {
    "check --markdown is --baseline": (
        ["check", "run", "--baseline", "base.json", "--markdown", "base.json"],
        "error: --markdown 'base.json' is the same file as --baseline 'base.json', which it would overwrite; "
        "pass another --markdown",
    ),
    "check --markdown is a CURRENT file": (
        ["check", "one.json", "--baseline", "base.json", "--markdown", "one.json"],
        "error: --markdown 'one.json' is the same file as CURRENT 'one.json', which it would overwrite; "
        "pass another --markdown",
    ),
    "check --markdown is the results.json of a CURRENT folder": (
        ["check", "run", "--baseline", "base.json", "--markdown", "run/results.json"],
        "error: --markdown 'run/results.json' is the same file as CURRENT 'run/results.json', which it would "
        "overwrite; pass another --markdown",
    ),
    "check --markdown is a symlink to --baseline": (
        ["check", "run", "--baseline", "base.json", "--markdown", "base-link.md"],
        "error: --markdown 'base-link.md' is the same file as --baseline 'base.json' (both are '{root}/base.json'), "
        "which it would overwrite; pass another --markdown",
    ),
    "baseline --out is the results.json of a SOURCES folder": (
        ["baseline", "run", "--out", "run/results.json"],
        "error: --out 'run/results.json' is the same file as SOURCES 'run/results.json', which it would "
        "overwrite; pass another --out",
    ),
    "baseline --out is a SOURCES file": (
        ["baseline", "one.json", "--out", "one.json"],
        "error: --out 'one.json' is the same file as SOURCES 'one.json', which it would overwrite; pass another --out",
    ),
    "baseline --out is a SOURCES file through a symlinked folder": (
        ["baseline", "run", "--out", "run-link/results.json"],
        "error: --out 'run-link/results.json' is the same file as SOURCES 'run/results.json' "
        "(both are '{root}/run/results.json'), which it would overwrite; pass another --out",
    ),
    "baseline --out is another sweep's results.json": (
        ["baseline", "run", "--out", "other/results.json"],
        "error: baseline --out 'other/results.json' holds results with per-layer rows or timelines and is not a "
        "baseline that `memprof baseline` wrote, so writing the baseline would strip them; pass another --out",
    ),
    "baseline --out is a backbone config": (
        ["baseline", "run", "--out", "cfg.json"],
        "error: baseline --out 'cfg.json' holds JSON that is not a memprof results file, which writing the baseline "
        "would replace; pass another --out, or delete the file first",
    ),
    "fit --png is --json": (
        ["fit", "--gpu", "t4", "--json", "plot.png", "--png", "plot.png"],
        "error: --png 'plot.png' is the same file as --json 'plot.png', so one would overwrite the other; "
        "pass --json and --png different paths",
    ),
    "fit --png is --json, new, through a symlinked folder": (
        ["fit", "--gpu", "t4", "--json", "new.json", "--png", "here/new.json"],
        "error: --png 'here/new.json' is the same file as --json 'new.json' (both are '{root}/new.json'), "
        "so one would overwrite the other; pass --json and --png different paths",
    ),
    "fit --json is --backbone": (
        ["fit", "--backbone", "cfg.json", "--gpu", "t4", "--json", "cfg.json"],
        "error: --json 'cfg.json' is the same file as --backbone 'cfg.json', which it would overwrite; "
        "pass another --json",
    ),
    "profile --json is --backbone": (
        ["profile", "--backbone", "cfg.json", "--json", "cfg.json"],
        "error: --json 'cfg.json' is the same file as --backbone 'cfg.json', which it would overwrite; "
        "pass another --json",
    ),
    "profile --json is a sweep's results.json": (
        ["profile", "--json", "run/results.json"],
        "error: --json 'run/results.json' holds a results file of 2 result(s), not one profile's result, and "
        "would be replaced by one; pass another --json, or delete the file first",
    ),
    "profile --json is a baseline": (
        ["profile", "--json", "base.json"],
        "error: --json 'base.json' holds a results file of 1 result(s), not one profile's result, and "
        "would be replaced by one; pass another --json, or delete the file first",
    ),
    "profile --json is a backbone config it does not read": (
        ["profile", "--json", "cfg.json"],
        "error: --json 'cfg.json' holds no memprof result, not one profile's result, and "
        "would be replaced by one; pass another --json, or delete the file first",
    ),
    "formula --json is --backbone": (
        ["formula", "--backbone", "cfg.json", "--json", "cfg.json"],
        "error: --json 'cfg.json' is the same file as --backbone 'cfg.json', which it would overwrite; "
        "pass another --json",
    ),
    "report RESULTS is a file the report writes (default --out)": (
        ["report", "rep/summary.md"],
        "error: --out 'rep/summary.md' is the same file as RESULTS 'rep/summary.md', which it would overwrite; "
        "pass another --out",
    ),
    "report RESULTS is a file the report writes (--out through a symlink)": (
        ["report", "rep/summary.md", "--out", "here/rep"],
        "error: --out 'here/rep/summary.md' is the same file as RESULTS 'rep/summary.md' "
        "(both are '{root}/rep/summary.md'), which it would overwrite; pass another --out",
    ),
}


@pytest.mark.parametrize("case", ALIASES)
def test_an_output_that_aliases_an_input_is_refused_and_nothing_changes(case, tree, monkeypatch, capsys, no_profiling):
    args, line = ALIASES[case]
    before = snapshot(tree)
    code, out, err = cli(monkeypatch, capsys, *args)
    assert (code, out, err) == (2, "", line.format(root=os.path.realpath(tree)) + "\n")
    assert snapshot(tree) == before


def test_a_model_folder_backbone_is_read_from_its_config_json(tmp_path, monkeypatch, capsys, no_profiling):
    monkeypatch.chdir(tmp_path)
    os.mkdir("model")
    (tmp_path / "model" / "config.json").write_text(json.dumps(TINY_OPT))
    code, out, err = cli(monkeypatch, capsys, "profile", "--backbone", "model", "--json", "model/config.json")
    assert (code, out) == (2, "")
    assert err == (
        "error: --json 'model/config.json' is the same file as --backbone 'model/config.json', which it would "
        "overwrite; pass another --json\n"
    )
    assert json.loads((tmp_path / "model" / "config.json").read_text()) == TINY_OPT


# -- what stays allowed ----------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["model", "model/config.json"])
def test_compare_into_the_folder_of_its_backbone_config_keeps_the_config(tmp_path, monkeypatch, capsys, backbone):
    # compare writes only its own file names (results.json, report.html, ...), never config.json
    monkeypatch.chdir(tmp_path)
    os.mkdir("model")
    (tmp_path / "model" / "config.json").write_text(json.dumps(TINY_OPT))
    before = (tmp_path / "model" / "config.json").read_bytes()
    args = ["--methods", "ft", "--seq-lens", "8", "--batch-sizes", "1", "--jobs", "1", "--quiet"]
    code, _, err = cli(monkeypatch, capsys, "compare", "--backbone", backbone, "--out", "model", *args)
    assert (code, err) == (0, "")
    assert (tmp_path / "model" / "config.json").read_bytes() == before
    assert [r.method for r in load_results(tmp_path / "model" / "results.json").results] == ["ft"]
    code, _, err = cli(
        monkeypatch, capsys, "compare", "--backbone", "model/config.json", "--out", "model/config.json", *args
    )
    assert (code, err) == (
        2,
        "error: output directory 'model/config.json' is a file; pass --out with a folder path (new or existing)\n",
    )
    assert (tmp_path / "model" / "config.json").read_bytes() == before


@pytest.mark.parametrize("out", [[], ["--out", "run"], ["--out", "run-link"]])
def test_report_into_the_folder_of_its_own_results_json(tree, monkeypatch, capsys, out):
    before = (tree / "run" / "results.json").read_bytes()
    code, _, err = cli(monkeypatch, capsys, "report", "run/results.json", "--quiet", *out)
    assert (code, err) == (0, "")
    assert (tree / "run" / "results.json").read_bytes() == before
    assert sorted(os.listdir(tree / "run"))[:4] == [
        "activations_vs_batch_size.png",
        "activations_vs_seq_len.png",
        "layers.csv",
        "layers_largest.png",
    ]


@pytest.fixture
def profiled(monkeypatch):
    """``engines.run`` returns a fixed result (these tests are about where it is written)."""
    monkeypatch.setattr(memprof.engines, "run", lambda config, cache=None: result("lora", saved=7))


@pytest.mark.parametrize("earlier", ["a previous single-profile json", "an empty file", "no file"])
def test_profile_json_replaces_a_previous_single_profile_result(tree, monkeypatch, capsys, profiled, earlier):
    path = tree / "r.json"
    if earlier == "a previous single-profile json":
        write_json(result(), path)
    elif earlier == "an empty file":
        path.write_text("")
    code, out, err = cli(monkeypatch, capsys, "profile", "--json", "r.json")
    assert (code, err) == (0, ""), err
    assert [(r.method, r.memory.saved_activations) for r in load_results(path).results] == [("lora", 7)]


def test_baseline_replaces_a_baseline_it_wrote_even_with_layers_kept(tree, monkeypatch, capsys):
    assert cli(monkeypatch, capsys, "baseline", "run", "--out", "kept.json", "--keep-layers")[0] == 0
    assert [len(r.layers) for r in load_results(tree / "kept.json").results] == [1, 1]
    code, out, err = cli(monkeypatch, capsys, "baseline", "other", "--out", "kept.json")
    assert (code, err) == (0, "")
    assert [(r.method, len(r.layers)) for r in load_results(tree / "kept.json").results] == [("adapter", 0)]


def test_baseline_replaces_results_without_per_layer_data_or_unreadable(tree, monkeypatch, capsys):
    """Nothing is lost: totals only, or a baseline broken by a merge conflict."""
    totals = [dataclasses.replace(result(m), layers=empty_layers()) for m in ("ft", "lora")]
    write_json(ResultSet(totals, command="memprof compare"), tree / "totals.json")
    (tree / "broken.json").write_text("<<<<<<< HEAD\n")
    for out in ("totals.json", "broken.json"):
        code, _, err = cli(monkeypatch, capsys, "baseline", "one.json", "--out", out)
        assert (code, err) == (0, ""), err
        assert [r.method for r in load_results(tree / out).results] == ["ft"]


def test_baseline_creates_a_missing_folder(tree, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "baseline", "run", "--out", "new/dir/baseline.json")
    assert (code, err) == (0, "")
    assert [r.method for r in load_results(tree / "new" / "dir" / "baseline.json").results] == ["ft", "lora"]


# -- check_distinct itself -------------------------------------------------------------------------


def test_check_distinct_passes_distinct_paths_and_skips_none(tmp_path):
    check_distinct({"A": tmp_path / "a", "B": [tmp_path / "b", None]}, {"--x": tmp_path / "x", "--y": None})


def test_check_distinct_sees_a_hard_link(tmp_path):
    (tmp_path / "a").write_text("a")
    os.link(tmp_path / "a", tmp_path / "b")
    with pytest.raises(MemprofError) as exc:
        check_distinct({"IN": tmp_path / "a"}, {"--out": tmp_path / "b"})
    assert str(exc.value) == (
        f"--out {str(tmp_path / 'b')!r} is the same file as IN {str(tmp_path / 'a')!r} (one file under two names), "
        "which it would overwrite; pass another --out"
    )


def test_check_distinct_resolves_a_dangling_symlink(tmp_path):
    os.symlink(tmp_path / "target.json", tmp_path / "link.json")
    with pytest.raises(MemprofError, match=r"^--b .*link\.json' is the same file as --a .*target\.json' \(both are"):
        check_distinct({}, {"--a": tmp_path / "target.json", "--b": tmp_path / "link.json"})


def test_the_names_report_checks_are_the_files_it_writes(tmp_path):
    from memprof.cli.report import written_names
    from memprof.reporters import render_all

    assert sorted(render_all(ResultSet([result()]), tmp_path)) == sorted(written_names())
