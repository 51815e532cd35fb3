"""The command line fails closed: user strings are never rich markup nor Markdown, usage errors are
one line, a method and its alias are one method, a sweep where nothing finished exits 1, a resumed
sweep refuses a changed backbone config or library, and outputs are checked before any work.

Every case runs through the real entry point (``memprof.cli.main``); the compare cases replace the
engine with synthetic results unless the case is about what the engine raises.
"""

import hashlib
import json
import os
import re

import pytest
from synthetic_results import fake_run, golden_resultset, make_result

import memprof.engines
import memprof.outputs
import memprof.sweep.grid
import memprof.sweep.run
from memprof.engines.config import ProfileConfig
from memprof.results.result import Result, ResultSet, load_results, write_json
from tests.memprof.conftest import TINY_BERT

SMALL = ["--methods", "ft,lora", "--seq-lens", "8,16", "--batch-sizes", "1,2"]

pytestmark = pytest.mark.usefixtures("stub_plots")  # these tests are about other files than the plots


@pytest.fixture
def no_profiling(monkeypatch):
    """Fails the test if anything is profiled (for checks that must come before the work)."""
    calls = []

    def run(config, cache=None):
        calls.append(config)
        raise AssertionError(f"profiled {config} although the command should have failed first")

    monkeypatch.setattr(memprof.engines, "run", run)
    monkeypatch.setattr(memprof.sweep.run, "default_runner", lambda: (run, None))
    return calls


def one_error_line(code, out, err):
    """The error line of a bad-input exit: exit 2, nothing on stdout, one line on stderr."""
    assert code == 2, (out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "╭" not in err and "Usage:" not in err
    return lines[0]


def write_config(path, **changes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**TINY_BERT, **changes}))
    return path


# -- 1. rich markup: user strings are printed as given ---------------------------------------------


def test_a_method_name_with_markup_is_one_line(cli, no_profiling):
    line = one_error_line(*cli("profile", "--method", "ft[/i]"))
    assert line.startswith("error: unknown method 'ft[/i]'; use one of ft, lora")


def test_brackets_in_paths_are_kept(cli, tmp_path, no_profiling):
    line = one_error_line(*cli("profile", "--backbone", "runs/[exp1]/config.json"))
    assert line.startswith("error: unknown backbone 'runs/[exp1]/config.json'; use one of ")
    (tmp_path / "runs" / "[exp1]").mkdir(parents=True)
    (tmp_path / "runs" / "[exp1]" / "config.json").write_text("{not json")
    line = one_error_line(*cli("profile", "--backbone", "runs/[exp1]/config.json"))
    assert "cannot read backbone config 'runs/[exp1]/config.json'" in line


def test_a_config_error_with_markup_is_one_line(cli, tmp_path, no_profiling):
    """A config.json with ``"hidden_act": "gelu[/]"`` in a folder named ``[exp1]``: the backbone's
    validation refuses it before the sweep, in one line that shows both as they are."""
    write_config(tmp_path / "runs" / "[exp1]" / "config.json", hidden_act="gelu[/]")
    line = one_error_line(
        *cli(
            "compare",
            "--backbone",
            "runs/[exp1]/config.json",
            "--methods",
            "ft,lora",
            "--seq-lens",
            "8",
            "--batch-sizes",
            "1",
            "--out",
            "sweep",
        )
    )
    assert "runs/[exp1]/config.json" in line and "'gelu[/]'" in line
    assert not (tmp_path / "sweep").exists()


def test_a_failure_message_with_markup_does_not_stop_the_sweep(cli, tmp_path, monkeypatch):
    """What the engine recorded for that config before backbones validated activations
    (``KeyError: 'gelu[/]'`` from transformers' ACT2FN), for every configuration, in a folder named
    ``[exp1]``: each failure is recorded and shown as it is, the sweep reaches the end, exit 1."""

    def run(config, cache):
        raise KeyError("gelu[/]")

    monkeypatch.setattr(memprof.sweep.run, "default_runner", lambda: (run, None))
    code, out, err = cli(
        "compare",
        "--methods",
        "ft,lora",
        "--seq-lens",
        "8",
        "--batch-sizes",
        "1",
        "--out",
        "runs/[exp1]/sweep",
        "--quiet",
    )
    assert code == 1, err
    saved = load_results(tmp_path / "runs" / "[exp1]" / "sweep" / "results.json")
    assert [(r.method, r.status, r.message) for r in saved.results] == [
        ("ft", "error", "KeyError: 'gelu[/]'"),
        ("lora", "error", "KeyError: 'gelu[/]'"),
    ]
    assert err.splitlines() == [
        "ft seq 8 batch 1: error: KeyError: 'gelu[/]'",
        "lora seq 8 batch 1: error: KeyError: 'gelu[/]'",
        "2 of 2 configurations did not finish (status and message in the table and in results.json)",
    ]
    assert out == f"{os.path.join('runs', '[exp1]', 'sweep', 'report.html')}\n"


def test_a_message_with_markup_among_successes(cli, tmp_path, monkeypatch):
    """One configuration fails with markup-like text; the others still run and the table and the
    progress line show the message literally."""
    message = "boom [/] [bold]not bold[/bold] [red]"

    def run(config, cache):
        if (config.method, config.seq_len, config.batch_size) == ("ft", 8, 1):
            raise RuntimeError(message)
        return fake_run(config)

    monkeypatch.setattr(memprof.sweep.run, "default_runner", lambda: (run, None))
    monkeypatch.setenv("COLUMNS", "400")
    code, out, err = cli("compare", *SMALL, "--out", "[exp1]")
    assert code == 0, err
    assert f"ft seq 8 batch 1: error: RuntimeError: {message}" in err
    assert f"error: RuntimeError: {message}" in out  # the summary table's status cell
    assert "1 of 8 configurations did not finish" in out
    assert out.strip().splitlines()[-1] == f"report: {os.path.join('[exp1]', 'report.html')}"
    assert len(load_results(tmp_path / "[exp1]" / "results.json").results) == 8


def test_the_summary_table_takes_cells_literally():
    from rich.console import Console

    from memprof.cli.views import summary_table

    bad = Result(
        backbone="[b]x[/b]",
        method="ft",
        engine="fake",
        target="cuda",
        dtype="fp32",
        attn_implementation="sdpa",
        seq_len=8,
        batch_size=1,
        task="classification",
        status="error",
        message="KeyError: 'gelu[/]'",
    )
    console = Console(width=400, record=True, color_system=None)
    console.print(summary_table(ResultSet([bad])))
    text = console.export_text()
    assert "memprof compare: [b]x[/b]" in text
    assert "error: KeyError: 'gelu[/]'" in text


# -- 2. usage errors are one line ------------------------------------------------------------------


USAGE = [
    (["profile", "--seq-len", "abc"], "error: invalid value 'abc' for --seq-len: ", "; pass e.g. --seq-len 512"),
    (["profile", "--seq-len=abc"], "error: invalid value 'abc' for --seq-len: ", "; pass e.g. --seq-len 512"),
    (
        ["compare", "--seq-len", "128"],
        "error: unknown option '--seq-len' for memprof compare; did you mean --seq-lens?",
        "see `memprof compare --help` for its options",
    ),
    (
        ["profile", "--bogus"],
        "error: unknown option '--bogus' for memprof profile; ",
        "see `memprof profile --help` for its options",
    ),
    (
        ["bogus"],
        "error: no such command 'bogus'; use one of profile, backbones, compare, report, check, baseline, diagnose",
        "(see `memprof --help`)",
    ),
    (
        ["baseline", "x.json"],
        "error: missing option '--out'",
        "for memprof baseline; pass it (see `memprof baseline --help`)",
    ),
    (
        ["check", "x.json", "--tolerance"],
        "error: option '--tolerance' requires an argument",
        "; pass e.g. --tolerance 2%",
    ),
    (["report", "a.json", "b.json"], "error: got unexpected extra argument", "; see `memprof report --help`"),
]


@pytest.mark.parametrize("args, start, end", USAGE, ids=[" ".join(a) for a, _, _ in USAGE])
def test_usage_errors_are_one_line(cli, no_profiling, args, start, end):
    line = one_error_line(*cli(*args))
    assert line.startswith(start) and line.endswith(end), line


def test_help_still_works(cli):
    code, out, err = cli("profile", "--help")
    assert code == 0 and "--seq-len" in out and err == ""


# -- 3. a method and its alias are one method ------------------------------------------------------


@pytest.mark.parametrize("methods, fix", [("meft,meft1", "meft"), ("ft,meft1,lora,meft", "ft,meft1,lora")])
def test_a_method_and_its_alias_are_refused(cli, tmp_path, no_profiling, methods, fix):
    line = one_error_line(
        *cli("compare", "--methods", methods, "--seq-lens", "8", "--batch-sizes", "1", "--out", "run")
    )
    assert line == (
        f"error: method 'meft' is an alias of 'meft1' and both are in --methods, so it would be profiled "
        f"twice; list it once, e.g. --methods {fix}"
    )
    assert not (tmp_path / "run").exists()


def test_the_sweep_refuses_aliases_too():
    from memprof.errors import MemprofError

    assert memprof.sweep.grid.alias_of("meft") == "meft1" and memprof.sweep.grid.alias_of("meft1") == "meft1"
    with pytest.raises(MemprofError, match="method 'meft' is an alias of 'meft1'"):
        memprof.sweep.grid.parse_methods("meft1,meft")
    with pytest.raises(MemprofError, match="method 'meft' is an alias of 'meft1'"):
        memprof.sweep.grid.Grid(backbone="bert-base", methods=["meft", "meft1"], seq_lens=[8], batch_sizes=[1])
    assert memprof.sweep.grid.parse_methods("meft,meft2") == ["meft", "meft2"]


# -- 4. nothing finished: exit 1, and the count in --quiet mode ------------------------------------


def _failing(monkeypatch, when):
    def run(config, cache):
        if when(config):
            raise RuntimeError("kaboom")
        return fake_run(config)

    monkeypatch.setattr(memprof.sweep.run, "default_runner", lambda: (run, None))


def test_compare_exits_1_when_no_configuration_finished(cli, tmp_path, monkeypatch):
    _failing(monkeypatch, lambda config: True)
    code, out, err = cli("compare", *SMALL, "--out", "run", "--quiet")
    assert code == 1
    assert out == f"{os.path.join('run', 'report.html')}\n"
    assert "8 of 8 configurations did not finish" in err
    assert [r.status for r in load_results(tmp_path / "run" / "results.json").results] == ["error"] * 8
    code, out, err = cli("compare", *SMALL, "--out", "run2")
    assert code == 1 and "8 of 8 configurations did not finish" in out


def test_quiet_compare_says_how_many_failed(cli, monkeypatch):
    _failing(monkeypatch, lambda config: config.method == "lora" and config.seq_len == 16)
    code, out, err = cli("compare", *SMALL, "--out", "run", "--quiet")
    assert code == 0
    assert out == f"{os.path.join('run', 'report.html')}\n"
    assert err.strip().splitlines()[-1] == (
        "2 of 8 configurations did not finish (status and message in the table and in results.json)"
    )


# -- 5. a resumed sweep finds what it started with -------------------------------------------------


def _interrupt_after(monkeypatch, n):
    calls = []

    def run(config, cache):
        if len(calls) == n:
            raise KeyboardInterrupt
        calls.append(config)
        return fake_run(config)

    monkeypatch.setattr(memprof.sweep.run, "default_runner", lambda: (run, None))


def _fingerprint(config_path):
    resolved = ProfileConfig(backbone=str(config_path), seq_len=8, batch_size=1).resolved.config
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def test_resume_refuses_a_changed_backbone_config(cli, tmp_path, monkeypatch):
    config = write_config(tmp_path / "model" / "config.json")
    _interrupt_after(monkeypatch, 3)
    assert cli("compare", "--backbone", "model", *SMALL, "--out", "run", "--quiet")[0] == 130
    saved = load_results(tmp_path / "run" / "results.json")
    before = _fingerprint(config)
    assert saved.options["backbone_config_sha256"] == before
    assert set(saved.options["versions"]) == {"torch", "transformers", "peft", "memprof"}
    assert (saved.options["engine"], saved.options["dtype"], saved.options["task"]) == (
        "fake",
        "fp32",
        "classification",
    )

    write_config(config, intermediate_size=64)
    after = _fingerprint(config)
    monkeypatch.setattr(memprof.sweep.run, "default_runner", lambda: (fake_run, None))
    line = one_error_line(*cli("compare", "--resume", "run"))
    assert line == (
        f"error: backbone config of {os.path.join('model', 'config.json')!r} changed since the sweep "
        f"started (fingerprint {before[:12]} -> {after[:12]}); start a new sweep with another --out"
    )
    assert len(load_results(tmp_path / "run" / "results.json").results) == 3  # untouched

    write_config(config)  # restored: resumes
    code, _, err = cli("compare", "--resume", "run", "--quiet")
    assert code == 0, err
    assert len(load_results(tmp_path / "run" / "results.json").results) == 8


def test_resume_refuses_another_library_version(cli, tmp_path, monkeypatch):
    _interrupt_after(monkeypatch, 2)
    assert cli("compare", *SMALL, "--out", "run", "--quiet")[0] == 130
    was = load_results(tmp_path / "run" / "results.json").options["versions"]["transformers"]
    real = memprof.sweep.run.environment
    monkeypatch.setattr(memprof.sweep.run, "environment", lambda: {**real(), "transformers": "99.0"})
    monkeypatch.setattr(memprof.sweep.run, "default_runner", lambda: (fake_run, None))
    line = one_error_line(*cli("compare", "--resume", "run"))
    assert line == (
        f"error: transformers version changed since the sweep started ({was} -> 99.0); resume it with "
        f"transformers {was}, or start a new sweep with another --out"
    )


def test_results_without_a_fingerprint_still_resume(cli, tmp_path, monkeypatch):
    _interrupt_after(monkeypatch, 2)
    assert cli("compare", *SMALL, "--out", "run", "--quiet")[0] == 130
    path = tmp_path / "run" / "results.json"
    data = json.loads(path.read_text())
    for key in ("backbone_config_sha256", "versions"):
        del data["options"][key]
    path.write_text(json.dumps(data))
    monkeypatch.setattr(memprof.sweep.run, "default_runner", lambda: (fake_run, None))
    code, _, err = cli("compare", "--resume", "run", "--quiet")
    assert code == 0, err
    assert len(load_results(path).results) == 8


# -- 6. outputs are checked before any work --------------------------------------------------------


def test_profile_json_in_a_missing_folder_fails_before_profiling(cli, tmp_path, no_profiling):
    line = one_error_line(*cli("profile", "--json", "missing_folder/r.json"))
    assert line == (
        "error: cannot write the result to 'missing_folder/r.json': folder 'missing_folder' does not "
        "exist; create it first, or pass --json with a path in an existing folder"
    )
    (tmp_path / "afolder").mkdir()
    line = one_error_line(*cli("profile", "--json", "afolder"))
    assert line.startswith("error: cannot write the result to 'afolder': it is a folder; pass --json with a file path")
    assert no_profiling == []


def test_unwritable_folders_are_refused_before_the_work(cli, tmp_path, monkeypatch, no_profiling):
    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(memprof.outputs, "_writable", lambda folder: folder.resolve() != (tmp_path / "ro").resolve())
    line = one_error_line(*cli("profile", "--json", "ro/r.json"))
    assert line == (
        "error: cannot write the result to 'ro/r.json': folder 'ro' is not writable; pass --json with a "
        "path in a folder you can write to"
    )
    line = one_error_line(*cli("compare", *SMALL, "--out", "ro/run"))
    assert line == (
        "error: output directory 'ro/run' is not writable ('ro', where it would be created, is read-only "
        "for you); pass --out with a folder you can write to"
    )
    assert not (tmp_path / "ro" / "run").exists()
    write_json(ResultSet([make_result("ft", 8, 1)]), tmp_path / "r.json")
    line = one_error_line(*cli("report", "r.json", "--out", "ro"))
    assert line.startswith("error: output directory 'ro' is not writable (it is read-only for you)")
    assert no_profiling == []


def test_every_writing_command_checks_its_output_first(cli, tmp_path):
    (tmp_path / "afile").write_text("x")
    line = one_error_line(*cli("compare", *SMALL, "--out", "afile/run"))
    assert line == "error: output directory 'afile/run' cannot be created because 'afile' is a file; pass another --out"
    # the inputs do not exist: the output is what is checked first
    line = one_error_line(*cli("check", "nope.json", "--baseline", "nope.json", "--markdown", "no/dir.md"))
    assert line.startswith("error: cannot write the Markdown report to 'no/dir.md': folder 'no' does not exist")
    line = one_error_line(*cli("baseline", "nope.json", "--out", "afile/b.json"))
    assert line == (
        "error: cannot write the baseline to 'afile/b.json': 'afile' is a file, not a folder; pass --out "
        "with another path"
    )
    line = one_error_line(*cli("report", "nope.json", "--out", "afile"))
    assert line.startswith("error: output directory 'afile' is a file")


# -- 7. summary.md and the gate's Markdown are inert -----------------------------------------------


HOSTILE = "RuntimeError: <script>alert(1)</script> | `rm -rf /` *loud* [link](http://x) _em_"


def _render(markdown_text):
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").enable("strikethrough").render(markdown_text)


def test_summary_md_is_inert(tmp_path):
    from memprof.reporters import markdown

    ok = make_result("ft", 8, 1, backbone="<b>bb</b>|`x`")
    bad = Result(
        backbone=ok.backbone,
        method="lora",
        engine="fake",
        target="cuda",
        dtype="fp32",
        attn_implementation="sdpa",
        seq_len=8,
        batch_size=1,
        task="classification",
        status="error",
        message=HOSTILE,
    )
    command = "memprof compare --backbone '```\n<script>'"
    text = markdown.render(ResultSet([ok, bad], command=command), tmp_path / "summary.md").read_text()
    html = _render(text)
    assert "<script>" not in html and "<b>" not in html and "<em>" not in html and "<a " not in html
    assert "<strong>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; | `rm -rf /` *loud* [link](http://x) _em_" in html  # as typed
    assert "<h2>memprof compare: &lt;b&gt;bb&lt;/b&gt;|`x`</h2>" in html
    tables = html.split("<table>")[1:]
    assert len(tables) == 2
    for t in tables:  # the | in the message and the backbone added no column
        head, body = t.split("<tbody>")
        rows = body.split("</tr>")[:-1]
        assert len(rows) in (1, 2) and len(re.findall(r"<th[ >]", head)) in (8, 10)
        assert all(len(re.findall(r"<td[ >]", r)) == len(re.findall(r"<th[ >]", head)) for r in rows)
    assert "````sh\nmemprof compare --backbone '```\n<script>'\n````" in text  # the fence outlasts the command's
    assert "<pre><code class=\"language-sh\">memprof compare --backbone '```\n&lt;script&gt;'\n</code></pre>" in html


def test_gate_markdown_is_inert():
    from memprof.checks.gate import GateReport, GateRow
    from memprof.checks.gate_markdown import gate_markdown

    key = ("a|`b`<i>", "ft", 8, 1, "fp32", "fake", "cuda", "first", "full")
    row = GateRow(key=key, metric="peak", baseline=100, current=200, verdict="regression")
    report = GateReport(rows=[row], tolerance=0.02, warnings=["torch <b>2.0</b> vs `2.1` | *x*"], only_baseline=[key])
    html = _render(gate_markdown(report, update_command="memprof baseline `x` --out b.json"))
    assert "<i>" not in html and "<b>" not in html and "<em>" not in html
    assert "torch &lt;b&gt;2.0&lt;/b&gt; vs `2.1` | *x*" in html
    label = "<code>a|`b`&lt;i&gt; ft seq=8 batch=1 fp32 fake-&gt;cuda</code>"
    assert html.count(label) == 3  # the two tables (one cell each, the | kept inside) and the list
    assert len(re.findall(r"<td[ >]", html)) == 2 * 6


def test_a_newline_inside_a_user_string_stays_on_the_one_error_line(cli, tmp_path):
    """Found by tests/memprof/test_fuzz.py: a results file whose environment has a key with a newline."""
    data = golden_resultset().to_dict()
    data["results"][0]["environment"] = {"a\nb": None}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    code, out, err = cli("report", str(path))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "environment.a\\nb is null" in err
