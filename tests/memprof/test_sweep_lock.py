"""One writer per output folder (NOTE [One writer per output folder]): a sweep locks its --out
from plan to its last report file; a second compare or compare --resume on that folder is refused
in one line naming the holder; a lock left by a dead process never blocks."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import PREAMBLE

from memprof.errors import MemprofError
from memprof.sweep.lock import LOCK_FILE, OutLock

SMALL = ["--methods", "ft,lora,adapter", "--seq-lens", "128,256", "--batch-sizes", "2,4"]

# A compare in another process whose runner waits for the file ``go`` (after creating ``started``):
# it holds the folder for as long as the test wants.
SLOW_COMPARE = (
    PREAMBLE
    + """
import pathlib, time
import memprof.sweep.run as sweep
from synthetic_results import fake_run
from memprof.cli import main

def slow(config, cache):
    pathlib.Path("started").touch()
    while not pathlib.Path("go").exists():
        time.sleep(0.05)
    return fake_run(config)

sweep.default_runner = lambda: (slow, None)
sweep.auto_jobs = lambda grid: 1
sys.argv = ["memprof", "compare", *sys.argv[1:]]
main()
"""
)


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.fixture
def slow_compare(tmp_path, stub_plots):
    """start(*args) -> the running compare (its runner blocked until ``go`` exists)."""
    procs = []

    def start(*args):
        script = SLOW_COMPARE
        proc = subprocess.Popen(
            [sys.executable, "-c", script, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        procs.append(proc)
        wait_for(tmp_path / "started", proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def refusal(pid: int, command: str) -> str:
    return (
        f"error: output folder 'run' is being written by another memprof run (pid {pid} on "
        f"{socket.gethostname()}: {command}); wait for it to finish, or pass another --out\n"
    )


def test_a_second_compare_into_a_running_folder_is_refused_and_nothing_is_lost(cli, tmp_path, slow_compare):
    first = slow_compare(*SMALL, "--out", "run", "--quiet")
    holder = "memprof compare " + " ".join(SMALL) + " --out run --quiet"

    code, out, err = cli("compare", *SMALL, "--out", "run")
    assert (code, out, err) == (2, "", refusal(first.pid, holder))
    code, out, err = cli("compare", "--resume", "run")  # a resume takes the lock too
    assert (code, out, err) == (2, "", refusal(first.pid, holder))

    (tmp_path / "go").touch()
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr.decode()
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [(r["method"], r["seq_len"], r["batch_size"]) for r in saved["results"]] == [
        (m, s, b) for m in ("ft", "lora", "adapter") for b in (2, 4) for s in (128, 256)
    ]
    assert all(r["status"] == "ok" for r in saved["results"])
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released, and removed


def test_a_lock_left_by_a_killed_process_does_not_block(cli, tmp_path, stub_plots):
    folder = tmp_path / "run"
    folder.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import time; from memprof.sweep.lock import OutLock; OutLock({str(folder)!r}).acquire(); "
            "print('locked', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout.readline() == b"locked\n"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == holder.pid  # the stale file is there

    code, out, err = cli("compare", *SMALL, "--out", "run", "--quiet")
    assert (code, err) == (0, "")
    assert len(json.loads((folder / "results.json").read_text())["results"]) == 12
    assert not (folder / LOCK_FILE).exists()


def test_resume_is_refused_while_another_holds_the_folder(cli, tmp_path, stub_plots):
    code, _, err = cli("compare", *SMALL, "--out", "run", "--quiet")
    assert code == 0, err
    before = (tmp_path / "run" / "results.json").read_bytes()
    lock = OutLock(tmp_path / "run").acquire()  # another open file: the same process conflicts too
    try:
        code, out, err = cli("compare", "--resume", "run")
        assert (code, out) == (2, "")
        assert err.startswith(f"error: output folder 'run' is being written by another memprof run (pid {os.getpid()} ")
        assert len(err.splitlines()) == 1
    finally:
        lock.release()
    assert (tmp_path / "run" / "results.json").read_bytes() == before
    code, _, err = cli("compare", "--resume", "run", "--quiet")  # released: the resume runs
    assert (code, err) == (0, "")


def test_a_refused_new_sweep_releases_the_folder(cli, tmp_path, stub_plots):
    """A refusal after plan took the lock (a results.json already there) must not keep it."""
    assert cli("compare", *SMALL, "--out", "run", "--quiet")[0] == 0
    code, _, err = cli("compare", *SMALL, "--out", "run")
    assert (code, err) == (
        2,
        "error: 'run' already holds a results.json; pass --resume run to continue it, or another --out\n",
    )
    assert not (tmp_path / "run" / LOCK_FILE).exists()
    OutLock(tmp_path / "run").acquire().release()  # nobody holds it


def test_the_lock_file_names_its_holder_and_goes_on_release(tmp_path):
    lock = OutLock(tmp_path).acquire()
    info = json.loads((tmp_path / LOCK_FILE).read_text())
    assert (info["pid"], info["host"]) == (os.getpid(), socket.gethostname())
    assert info["command"].startswith("memprof")
    with pytest.raises(MemprofError, match=rf"^output folder '{tmp_path}' is being written by another memprof run"):
        OutLock(tmp_path).acquire()
    lock.release()
    assert list(tmp_path.iterdir()) == []
    lock.release()  # twice is nothing


def test_a_folder_with_a_lock_file_is_still_read_by_report_and_check(cli, tmp_path, stub_plots):
    assert cli("compare", *SMALL, "--out", "run", "--quiet")[0] == 0
    (tmp_path / "run" / LOCK_FILE).write_text('{"pid": 1, "host": "h", "command": "memprof compare"}\n')
    code, out, err = cli("report", "run/results.json", "--quiet")
    assert (code, err) == (0, ""), err
    code, out, err = cli("check", "run", "--baseline", "run/results.json")
    assert code == 0, err
    assert (
        out.splitlines()[-1]
        == "PASS: 12 configuration(s) x 3 metric(s) compared at 2.0% tolerance; 0 regressed, 0 improved"
    )
