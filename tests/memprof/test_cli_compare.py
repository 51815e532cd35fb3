"""``memprof compare`` and ``memprof report`` through the real entry point (memprof.cli.main, which
turns MemprofError into one line and exit code 2), with the engine replaced by synthetic results."""

import json
import os

import pytest
from processes import compare_process
from synthetic_results import fake_run

import memprof.sweep.run

SMALL = ["--methods", "ft,lora,adapter", "--seq-lens", "128,256", "--batch-sizes", "2,4"]


def test_compare_writes_every_output(cli, tmp_path):
    code, out, err = cli("compare", *SMALL, "--out", "run")
    assert code == 0, err
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert names == {
        "results.json",
        "results.csv",
        "layers.csv",
        "report.html",
        "summary.md",
        "activations_vs_seq_len.png",
        "activations_vs_batch_size.png",
        "layers_largest.png",
        "peak_breakdown.png",
        "saved_by_category.png",
        "timeline.png",
    }
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert len(saved["results"]) == 12
    assert saved["command"].startswith("memprof compare --backbone bart-large --methods ft,lora,adapter")
    assert "ft" in out and "23.8" in out  # the summary table, with lora's reduction
    assert out.strip().splitlines()[-1] == f"report: {os.path.join('run', 'report.html')}"
    assert "12/12" in err  # the progress bar


def test_no_report_writes_results_json_alone(cli, tmp_path, stub_plots):
    code, out, err = cli("compare", *SMALL, "--out", "bare", "--no-report")
    assert code == 0, err
    assert {p.name for p in (tmp_path / "bare").iterdir()} == {"results.json"}
    assert len(json.loads((tmp_path / "bare" / "results.json").read_text())["results"]) == 12
    assert "ft" in out and "23.8" in out  # the summary table all the same
    assert out.strip().splitlines()[-1] == f"results: {os.path.join('bare', 'results.json')}"
    assert cli("compare", *SMALL, "--out", "quiet", "--no-report", "--quiet") == (
        0,
        f"{os.path.join('quiet', 'results.json')}\n",
        "",
    )
    # rendered later from the results alone, as a gate's artefacts are
    assert cli("compare", *SMALL, "--out", "full", "--quiet")[0] == 0
    assert cli("report", "bare/results.json", "--quiet")[0] == 0
    for name in ("summary.md", "results.csv", "layers.csv"):
        assert (tmp_path / "bare" / name).read_text() == (tmp_path / "full" / name).read_text()


def test_default_out_dir_and_latest(cli, tmp_path):
    code, out, err = cli("compare", *SMALL, "--quiet")
    assert code == 0, err
    (folder,) = [p for p in (tmp_path / "reports").iterdir() if p.name != "latest"]
    assert folder.name.startswith("bart-large-")
    latest = tmp_path / "reports" / "latest"
    assert latest.resolve() == folder.resolve()
    assert out == f"{folder.relative_to(tmp_path) / 'report.html'}\n"  # --quiet: only the path
    assert err == ""


def test_failed_configurations_are_reported_and_do_not_stop_the_sweep(cli, tmp_path, monkeypatch, stub_plots):
    def run(config, cache):
        if config.method == "lora" and config.seq_len == 256:
            raise RuntimeError("kaboom")
        return fake_run(config)

    monkeypatch.setattr(memprof.sweep.run, "default_runner", lambda: (run, None))
    code, out, err = cli("compare", *SMALL, "--out", "run")
    assert code == 0
    assert "2 of 12 configurations did not finish" in out
    statuses = [r["status"] for r in json.loads((tmp_path / "run" / "results.json").read_text())["results"]]
    assert statuses.count("error") == 2


def test_interrupt_then_resume(cli, tmp_path, monkeypatch, stub_plots):
    code, _, err = cli("compare", *SMALL, "--out", "full", "--quiet")
    assert code == 0, err

    calls = []

    def interrupted(config, cache):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(config)
        return fake_run(config)

    monkeypatch.setattr(memprof.sweep.run, "default_runner", lambda: (interrupted, None))
    code, out, err = cli("compare", *SMALL, "--out", "cut", "--quiet")
    assert code == 130
    line = err.strip()
    assert line == (
        "interrupted after 5 of 12 configurations; the results so far are in "
        f"{os.path.join('cut', 'results.json')}; resume with: memprof compare --resume cut"
    )
    assert len(json.loads((tmp_path / "cut" / "results.json").read_text())["results"]) == 5
    assert not (tmp_path / "cut" / "report.html").exists()

    monkeypatch.setattr(memprof.sweep.run, "default_runner", lambda: (fake_run, None))
    code, out, err = cli("compare", "--resume", "cut", "--quiet")  # options come from results.json
    assert code == 0, err
    full = json.loads((tmp_path / "full" / "results.json").read_text())
    assert json.loads((tmp_path / "cut" / "results.json").read_text()) == full
    assert (tmp_path / "cut" / "summary.md").read_text() == (tmp_path / "full" / "summary.md").read_text()


def test_report_renders_again_from_saved_results(cli, tmp_path, stub_plots):
    assert cli("compare", *SMALL, "--out", "run", "--quiet")[0] == 0
    code, out, err = cli("report", "run/results.json", "--out", "again")
    assert code == 0, err
    for name in ("summary.md", "results.csv", "layers.csv"):
        assert (tmp_path / "again" / name).read_text() == (tmp_path / "run" / name).read_text()
    assert (tmp_path / "again" / "results.json").read_text() == (tmp_path / "run" / "results.json").read_text()
    assert (tmp_path / "again" / "report.html").is_file()
    (tmp_path / "run" / "summary.md").unlink()
    assert cli("report", "run/results.json", "--quiet") == (0, f"{os.path.join('run', 'report.html')}\n", "")
    assert (tmp_path / "run" / "summary.md").is_file()


def _write(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    return name


BAD = [
    (["compare", "--methods", ""], "method list '' is empty"),
    (["compare", "--methods", "ft,lora,ft"], "method 'ft' is listed twice"),
    (["compare", "--methods", "ft,bogus"], "unknown method 'bogus'"),
    (["compare", "--seq-lens", "128,abc"], "sequence length 'abc' in --seq-lens '128,abc' is not a whole number"),
    (["compare", "--seq-lens", "0,128"], "sequence length 0 in --seq-lens must be a whole number of at least 1"),
    (["compare", "--seq-lens", "-128"], "must be a whole number of at least 1"),
    (["compare", "--batch-sizes", "8,x"], "batch size 'x' in --batch-sizes '8,x' is not a whole number"),
    (["compare", "--batch-sizes", "0"], "batch size 0 in --batch-sizes must be a whole number of at least 1"),
    (
        ["compare", "--seq-lens", "2048"],
        "2048 in --seq-lens exceeds bart-large's maximum of 1024 positions; pass sequence lengths of 1024 or less",
    ),
    (["compare", "--engine", "tpu"], "unknown engine 'tpu'"),
    (["compare", "--jobs", "0"], "--jobs 0 must be at least 1"),
    (["compare", "--out", "afile"], "output directory 'afile' is a file"),
    (["compare", "--resume", "nowhere"], "does not exist"),
    (["report", "missing.json"], "results file 'missing.json' does not exist"),
    (["report", "notjson"], "results file 'notjson' is not valid JSON"),
    (["report", "other.json"], "results file has schema_version 999, this memprof reads"),
    (["report", "list.json"], "holds JSON but not a memprof result"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(cli, tmp_path, args, message):
    _write(tmp_path, "afile", "x")
    _write(tmp_path, "notjson", "{not json")
    _write(tmp_path, "other.json", json.dumps({"schema_version": 999, "results": []}))
    _write(tmp_path, "list.json", "[1, 2]")
    extra = []
    if args[0] == "compare":  # the small grid for every option the case leaves out
        for flag, value in zip(SMALL[::2], SMALL[1::2]):
            if flag not in args:
                extra += [flag, value]
    code, out, err = cli(*args, *extra)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]
    assert not (tmp_path / "reports").exists()


def test_existing_results_need_resume(cli, tmp_path, stub_plots):
    assert cli("compare", *SMALL, "--out", "run", "--quiet")[0] == 0
    code, out, err = cli("compare", *SMALL, "--out", "run")
    assert code == 2 and "already holds a results.json; pass --resume run to continue it" in err
    code, out, err = cli("compare", "--resume", "run", "--seq-lens", "128")
    assert code == 2 and "was swept with seq_lens=[128, 256], not [128]" in err
    code, out, err = cli("report", "run/results.json", "--out", "run2", "--quiet")
    assert code == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.json").write_text((tmp_path / "run" / "results.json").read_text())
    code, out, err = cli("report", "run/results.json", "--out", "other")
    assert code == 2 and "already holds another results.json" in err


SLOW_ENGINE = """
import time
import memprof.sweep.run
from synthetic_results import fake_run

calls = []

def slow(config, cache):
    # The first two configurations are quick; the rest take long enough that the test's SIGINT,
    # sent once two results are on disk, always lands mid-sweep, however slowly the test polls.
    calls.append(config)
    time.sleep(0.3 if len(calls) <= 2 else 5.0)
    return fake_run(config)

memprof.sweep.run.default_runner = lambda: (slow, None)
"""


def test_real_ctrl_c_leaves_valid_partial_results(tmp_path):
    """SIGINT to a running `memprof compare` process: exit 130, one line saying how to resume, and
    a results.json that loads."""
    import signal
    import time

    from memprof.results.result import load_results

    # As from a terminal: Ctrl-C not ignored, whatever this (pytest) process inherited or was left with
    # (a child inherits an ignored SIGINT, and Python then never raises KeyboardInterrupt).
    proc = compare_process(
        tmp_path,
        SLOW_ENGINE,
        [*SMALL, "--out", "run", "--jobs", "1"],
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    results = tmp_path / "run" / "results.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if results.is_file() and len(json.loads(results.read_text())["results"]) >= 2:
            break
        time.sleep(0.05)
    parent_sigint = signal.getsignal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, f"{err} (SIGINT handler of the test process: {parent_sigint})"
    done = len(load_results(results).results)
    assert 2 <= done < 12
    assert err.strip().splitlines()[-1] == (
        f"interrupted after {done} of 12 configurations; the results so far are in "
        f"{os.path.join('run', 'results.json')}; resume with: memprof compare --resume run"
    )
