"""Sweeps linear in the grid (NOTE [Linear sweeps]): a result goes to the journal, results.json is
rewritten at power-of-two counts and at the end, so the bytes written grow linearly; a crash
leaves results.json plus the journal, from which --resume gives the uninterrupted file, byte for
byte; a torn last journal line is ignored."""

import json

import pytest
from synthetic_results import fake_run

import memprof.results.result
from memprof.errors import MemprofError
from memprof.sweep import grid as sweep_grid
from memprof.sweep import run as sweep
from memprof.sweep.resume import JOURNAL_FILE, Journal, read_journal, recorded


def grid(n):
    """n configurations: ft and lora, n // 2 sequence lengths each."""
    return sweep_grid.Grid(
        backbone="bart-large", methods=["ft", "lora"], seq_lens=[16 * (i + 1) for i in range(n // 2)], batch_sizes=[2]
    )


@pytest.fixture
def writes(monkeypatch):
    """Every write of a sweep: ("results.json", results it holds, bytes) or ("journal", 1, bytes)."""
    seen = []
    write_atomically, append = memprof.results.result.write_atomically, Journal.append

    def atomically(path, text):
        seen.append((path.name, len(json.loads(text)["results"]), len(text.encode())))
        return write_atomically(path, text)

    def journal(self, line):
        seen.append(("journal", 1, len(line.encode()) + 1))
        return append(self, line)

    monkeypatch.setattr(memprof.results.result, "write_atomically", atomically)
    monkeypatch.setattr(Journal, "append", journal)
    return seen


def test_results_json_is_rewritten_at_powers_of_two_and_at_the_end(tmp_path, writes):
    sweep.run_sweep(grid(20), tmp_path, run=fake_run)
    rewrites = [count for name, count, _ in writes if name == "results.json"]
    assert rewrites == [0, 1, 2, 4, 8, 16, 20]
    assert sum(name == "journal" for name, _, _ in writes) == 20
    assert not (tmp_path / JOURNAL_FILE).exists()


def test_the_bytes_written_grow_linearly(tmp_path, writes):
    sweep.run_sweep(grid(10), tmp_path / "small", run=fake_run)
    small = sum(size for _, _, size in writes)
    writes.clear()
    sweep.run_sweep(grid(40), tmp_path / "large", run=fake_run)
    large = sum(size for _, _, size in writes)
    assert 3.5 <= large / small <= 4.5  # rewriting after every result gave ~15


class Crash(BaseException):
    """A crash the sweep does not handle (a kill, a power cut), at configuration ``at``."""


def crash_at(at):
    calls = []

    def run(config, cache):
        if len(calls) == at:
            raise Crash
        calls.append(config)
        return fake_run(config)

    return run


@pytest.mark.parametrize("k, in_file", [(0, 0), (3, 2), (5, 4), (8, 8), (11, 8)])
def test_a_crash_then_resume_equals_an_uninterrupted_sweep(tmp_path, k, in_file):
    sweep.run_sweep(grid(12), tmp_path / "full", run=fake_run)
    with pytest.raises(Crash):
        sweep.run_sweep(grid(12), tmp_path / "cut", run=crash_at(k))
    cut = tmp_path / "cut"
    assert len(json.loads((cut / "results.json").read_text())["results"]) == in_file
    assert len(read_journal(cut / JOURNAL_FILE)) == k - in_file
    assert len(recorded(cut).results) == k

    counted = []
    sweep.run_sweep(grid(12), cut, resume=True, run=lambda c, cache: counted.append(c) or fake_run(c))
    assert len(counted) == 12 - k
    assert (cut / "results.json").read_bytes() == (tmp_path / "full" / "results.json").read_bytes()
    assert not (cut / JOURNAL_FILE).exists()


@pytest.mark.parametrize("tail", [b'{"backbone": "bart-la', b"\x00\x00\x00\n"])
def test_a_torn_last_journal_line_is_ignored(tmp_path, tail):
    sweep.run_sweep(grid(12), tmp_path / "full", run=fake_run)
    cut = tmp_path / "cut"
    with pytest.raises(Crash):
        sweep.run_sweep(grid(12), cut, run=crash_at(6))
    with (cut / JOURNAL_FILE).open("ab") as f:
        f.write(tail)
    assert len(read_journal(cut / JOURNAL_FILE)) == 2  # results 5 and 6; results.json holds 4

    counted = []
    sweep.run_sweep(grid(12), cut, resume=True, run=lambda c, cache: counted.append(c) or fake_run(c))
    assert len(counted) == 6
    assert (cut / "results.json").read_bytes() == (tmp_path / "full" / "results.json").read_bytes()


def test_a_bad_journal_line_before_the_last_is_refused(tmp_path):
    with pytest.raises(Crash):
        sweep.run_sweep(grid(12), tmp_path, run=crash_at(7))
    lines = (tmp_path / JOURNAL_FILE).read_bytes().split(b"\n")
    lines[0] = b"not json"
    (tmp_path / JOURNAL_FILE).write_bytes(b"\n".join(lines))
    journal = str(tmp_path / JOURNAL_FILE)
    with pytest.raises(MemprofError, match=rf"^journal {journal!r} line 1 is not JSON; delete the journal and resume"):
        sweep.run_sweep(grid(12), tmp_path, resume=True, run=fake_run)


def test_an_interrupt_folds_the_journal_into_results_json(tmp_path):
    def run(config, cache, calls=[]):  # noqa: B006 - counts the calls of this sweep
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(config)
        return fake_run(config)

    with pytest.raises(sweep.SweepInterrupted):
        sweep.run_sweep(grid(12), tmp_path, run=run)
    assert len(json.loads((tmp_path / "results.json").read_text())["results"]) == 5
    assert not (tmp_path / JOURNAL_FILE).exists()
