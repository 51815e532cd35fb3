"""Interrupts and dead workers: SIGTERM handled like Ctrl-C by every command (exit 143, one line,
a sweep's partial results kept and its workers stopped), and a worker process killed mid-sweep
charging only the configuration it was running, which --resume retries."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
from processes import compare_process
from synthetic_results import fake_run

import memprof.engines
import memprof.sweep.run
from memprof.errors import Interrupted, interrupt_exit_code
from memprof.results.result import config_key, load_results
from memprof.sweep import grid as sweep_grid
from memprof.sweep import run as sweep
from memprof.sweep.workers import died_with_worker, worker_died

SMALL = ["--methods", "ft,lora,adapter", "--seq-lens", "128,256", "--batch-sizes", "2,4"]
GRID = dict(backbone="bart-large", methods=["ft", "lora", "adapter"], seq_lens=[128, 256], batch_sizes=[2, 4])
DIED = "while profiling this configuration; memprof compare --resume retries it"


def grid():
    return sweep_grid.Grid(**GRID)


# --- exit codes ------------------------------------------------------------------------------------


def test_interrupt_exit_codes():
    assert interrupt_exit_code(KeyboardInterrupt()) == 130
    assert interrupt_exit_code(Interrupted(signal.SIGTERM)) == 143
    assert isinstance(Interrupted(signal.SIGTERM), KeyboardInterrupt)  # every Ctrl-C path takes it


def test_ctrl_c_in_profile_is_one_line_and_130(cli, monkeypatch, tiny_opt):
    def interrupted(config, *args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(memprof.engines, "run", interrupted)
    assert cli("profile", "--backbone", tiny_opt, "--seq-len", "16") == (
        130,
        "",
        "interrupted by SIGINT before `memprof profile` finished\n",
    )


def test_sigterm_in_profile_is_one_line_and_143(cli, monkeypatch, tiny_opt):
    def terminated(config, *args, **kw):
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal, to this (the test) process
        time.sleep(30)  # never reached: the handler raises at once
        raise AssertionError("SIGTERM did not interrupt the command")

    monkeypatch.setattr(memprof.engines, "run", terminated)
    assert cli("profile", "--backbone", tiny_opt, "--seq-len", "16") == (
        143,
        "",
        "interrupted by SIGTERM before `memprof profile` finished\n",
    )
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler lives only while memprof runs


def test_sigterm_in_compare_keeps_the_results_and_says_how_to_resume(cli, tmp_path, monkeypatch, stub_plots):
    calls = []

    def terminated(config, cache):
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        calls.append(config)
        return fake_run(config)

    monkeypatch.setattr(memprof.sweep.run, "default_runner", lambda: (terminated, None))
    code, out, err = cli("compare", *SMALL, "--out", "cut", "--quiet")
    assert (code, out) == (143, "")
    assert err == (
        "interrupted after 5 of 12 configurations; the results so far are in "
        f"{os.path.join('cut', 'results.json')}; resume with: memprof compare --resume cut\n"
    )
    assert [r.key for r in load_results(tmp_path / "cut" / "results.json").results] == [config_key(c) for c in calls]


# --- dead workers ----------------------------------------------------------------------------------

#: (method, seq_len, batch_size) whose worker process kills itself, as the OOM killer would; lora's
#: (256, 2) and (256, 4) come after it, for a fresh worker to run
KILLED = {("lora", 128, 4)}


def killing_run(config, cache):
    """Picklable for worker processes: SIGKILLs its own process at the KILLED configurations."""
    if (config.method, config.seq_len, config.batch_size) in KILLED:
        os.kill(os.getpid(), signal.SIGKILL)
    return fake_run(config)


def test_worker_died_result():
    (config,) = [c for c in grid().configs() if (c.method, c.seq_len, c.batch_size) == ("ft", 128, 2)]
    killed, exited = worker_died(config, -signal.SIGKILL), worker_died(config, 3)
    assert (killed.status, killed.message) == ("error", f"worker died (killed by SIGKILL) {DIED}")
    assert (exited.status, exited.message) == ("error", f"worker died (exit code 3) {DIED}")
    assert killed.key == config_key(config)
    assert died_with_worker(killed) and died_with_worker(exited)
    assert not died_with_worker(fake_run(config))


def test_a_killed_worker_charges_only_its_configuration_and_resume_retries_it(tmp_path):
    sweep.run_sweep(grid(), tmp_path / "full", run=fake_run)
    full = load_results(tmp_path / "full" / "results.json")
    rs = sweep.run_sweep(grid(), tmp_path / "cut", run=killing_run, jobs=2)
    assert [r.key for r in rs.results] == [r.key for r in full.results]  # grid order, nothing missing
    for got, want in zip(rs.results, full.results):
        if got.key[1:4] in KILLED:  # the death charged its own configuration; a fresh worker went on
            assert (got.status, got.message) == ("error", f"worker died (killed by SIGKILL) {DIED}")
        else:
            assert got.to_dict() == want.to_dict()

    retried = []
    sweep.run_sweep(grid(), tmp_path / "cut", resume=True, run=lambda c, k: retried.append(c) or fake_run(c))
    assert sorted((c.method, c.seq_len, c.batch_size) for c in retried) == sorted(KILLED)
    assert (tmp_path / "cut" / "results.json").read_bytes() == (tmp_path / "full" / "results.json").read_bytes()


# --- a real SIGTERM to a real `memprof compare` process with worker processes ---------------------

SLOW_ENGINE = """
import os, time
import memprof.sweep.run, memprof.sweep.workers
from synthetic_results import fake_run

calls = []

def slow(config, cache):
    # Each worker's first configuration is quick; the next would take 60 s, so a sweep that exits
    # soon after the test's SIGTERM (sent once two results are on disk) has terminated its workers.
    calls.append(config)
    with open("pids", "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(0.1 if len(calls) <= 1 else 60.0)
    return fake_run(config)

# the parent's (run_sweep) and the spawned workers' (this file runs in each: PYTHONPATH) runners
memprof.sweep.run.default_runner = memprof.sweep.workers.default_runner = lambda: (slow, None)
"""


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (no /proc entry, or a zombie nobody reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process states from /proc")
def test_real_sigterm_stops_workers_keeps_results_and_resume_completes(tmp_path, cli, stub_plots):
    proc = compare_process(
        tmp_path,
        SLOW_ENGINE,
        [*SMALL, "--out", "run", "--jobs", "2"],
        preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL),  # as from a shell or CI runner
    )
    results = tmp_path / "run" / "results.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if results.is_file() and len(json.loads(results.read_text())["results"]) >= 2:
            break
        time.sleep(0.05)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 30, "the sweep waited for a worker's 60 s configuration"
    assert proc.returncode == 143, err
    rs = load_results(results)
    assert len(rs.results) == 2 and all(r.status == "ok" for r in rs.results)  # the quick ones, no more
    assert err.strip().splitlines()[-1] == (
        f"interrupted after 2 of 12 configurations; the results so far are in "
        f"{os.path.join('run', 'results.json')}; resume with: memprof compare --resume run"
    )
    workers = {int(p) for p in (tmp_path / "pids").read_text().split()}
    assert len(workers) == 2 and proc.pid not in workers
    assert all(_gone(pid) for pid in workers)

    assert cli("compare", *SMALL, "--out", "full", "--quiet")[0] == 0  # in this process: fake_run
    code, _, err = cli("compare", "--resume", "run", "--quiet")
    assert code == 0, err
    assert results.read_bytes() == (tmp_path / "full" / "results.json").read_bytes()
