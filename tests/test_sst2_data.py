"""benchmarks/sst2_data.py: which source it reads, and that both give the same splits. Nothing
downloads: the ``datasets`` source is a stand-in module serving the local files' rows."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("sst2_data", Path(__file__).parents[1] / "benchmarks" / "sst2_data.py")
sst2_data = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sst2_data)


def write_split(folder: Path, name: str, rows: list[tuple[str, int]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.tsv").write_text("text\tlabel\n" + "".join(f"{t} \t{y}\n" for t, y in rows))


@pytest.fixture
def local(tmp_path, monkeypatch):
    """A folder of 5 training and 3 dev rows; MEMPROF_SST2_DIR unset."""
    monkeypatch.delenv(sst2_data.ENV, raising=False)
    write_split(tmp_path, "train", [(f"train {i}", i % 2) for i in range(5)])
    write_split(tmp_path, "dev", [("good", 1), ("bad", 0), ("fine", 1)])
    return tmp_path


class Rows:
    """The slice of ``datasets.Dataset`` sst2_data uses: len, select, column access."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def select(self, indices):
        return Rows([self.rows[i] for i in indices])

    def __getitem__(self, column):
        return [r[column] for r in self.rows]


@pytest.fixture
def hub(monkeypatch):
    """A stand-in ``datasets`` module: GLUE SST-2 of 4 training and 6 validation sentences."""
    calls = []
    splits = {
        "train": [{"sentence": f"hub {i} ", "label": 1 - i % 2} for i in range(4)],
        "validation": [{"sentence": f"v{i} ", "label": i % 2} for i in range(6)],
    }

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return Rows(splits[split])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.setattr(sst2_data, "_has_datasets", lambda: True)
    return calls


def test_local_files_are_read_stripped_with_a_limit(local):
    assert sst2_data.load("train", data_dir=local, limit=3) == (["train 0", "train 1", "train 2"], [0, 1, 0])
    assert sst2_data.load("dev", data_dir=local) == (["good", "bad", "fine"], [1, 0, 1])


def test_the_environment_variable_names_the_folder(local, monkeypatch):
    monkeypatch.setenv(sst2_data.ENV, str(local))
    assert sst2_data.local_dir() == local and sst2_data.available()
    assert sst2_data.load("dev", limit=1) == (["good"], [1])


def test_datasets_is_used_when_no_folder_is_named_and_dev_is_every_other_validation_row(hub, monkeypatch):
    monkeypatch.delenv(sst2_data.ENV, raising=False)
    assert sst2_data.load("dev") == (["v0", "v2", "v4"], [0, 0, 0])
    assert sst2_data.load("train", limit=2) == (["hub 0", "hub 1"], [1, 0])
    assert hub == [("nyu-mll/glue", "sst2", "validation"), ("nyu-mll/glue", "sst2", "train")]


def test_a_named_folder_or_source_local_never_calls_datasets(hub, local, monkeypatch):
    assert sst2_data.load("dev", data_dir=local) == (["good", "bad", "fine"], [1, 0, 1])
    monkeypatch.setenv(sst2_data.ENV, str(local))
    assert sst2_data.load("dev") == (["good", "bad", "fine"], [1, 0, 1])
    monkeypatch.delenv(sst2_data.ENV)
    monkeypatch.setattr(sst2_data, "CHECKOUT_DIR", local)
    assert sst2_data.load("dev", source="local") == (["good", "bad", "fine"], [1, 0, 1])
    assert hub == []


def test_missing_files_name_the_path_and_both_fixes(tmp_path, monkeypatch):
    monkeypatch.setattr(sst2_data, "_has_datasets", lambda: False)
    with pytest.raises(sst2_data.DataNotFound) as info:
        sst2_data.load("train", data_dir=tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "train.tsv") in message and "--data-dir" in message and "datasets" in message


@pytest.mark.skipif(not sst2_data.available(), reason="the checkout's SST-2 copy is absent")
def test_the_checkout_copy_has_the_documented_sizes():
    assert len(sst2_data.load("train", source="local")[0]) == 67_349
    assert len(sst2_data.load("dev", source="local")[0]) == 436
