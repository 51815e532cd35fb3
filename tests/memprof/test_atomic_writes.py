"""Writers that leave the old file whole when a write fails, and saved formulas read strictly."""

from __future__ import annotations

import os

import pytest

from memprof.checks.gate import GateReport, GateRow
from memprof.checks.gate_markdown import gate_markdown, write_gate_markdown
from memprof.errors import MemprofError
from memprof.sweep.closed_form import FORMULAS_DIR, load_formulas

KEY = ("bert-base", "ft", 8, 1, "fp32", "fake", "cuda", "first", "full")
REPORT = GateReport(rows=[GateRow(key=KEY, metric="peak", baseline=100, current=200, verdict="regression")],
                    tolerance=0.02)  # fmt: skip


def test_the_gate_markdown_is_written_whole(tmp_path):
    path = tmp_path / "summary.md"
    assert write_gate_markdown(REPORT, path) == path
    assert path.read_text() == gate_markdown(REPORT)
    assert os.listdir(tmp_path) == ["summary.md"]  # no temporary file left


def test_a_failed_gate_markdown_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.md"
    path.write_text("the old summary\n")

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(MemprofError) as err:
        write_gate_markdown(REPORT, path)
    assert str(err.value).startswith(f"cannot write the Markdown report to {str(path)!r}: cannot write")
    assert "No space left on device" in str(err.value) and "\n" not in str(err.value)
    assert path.read_text() == "the old summary\n" and os.listdir(tmp_path) == ["summary.md"]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "is not valid JSON"),
        ('{"a": 1, "a": 2}', "twice"),
        ('{"method": "ft"}', ""),  # JSON, but not a formula
    ],
)
def test_a_bad_saved_formula_is_one_line_naming_the_file(tmp_path, text, why):
    folder = tmp_path / FORMULAS_DIR
    folder.mkdir()
    (folder / "ft.json").write_text(text)
    with pytest.raises(MemprofError) as err:
        load_formulas(tmp_path)
    message = str(err.value)
    assert message.startswith(f"cannot read the formula {str(folder / 'ft.json')!r} (")
    assert message.endswith("); delete it and run compare again") and why in message and "\n" not in message


def test_no_formulas_folder_is_no_formulas(tmp_path):
    assert load_formulas(tmp_path) == []
