"""Shared fixtures of the memprof tests."""

import base64
import json
import os
import sys

import pytest
import torch
from synthetic_results import fake_run

import memprof.cli.compare
import memprof.sweep.run
from memprof.cli import main
from memprof.models import backbones

#: a 2-layer OPT of width 16: a profile in milliseconds, with a loss, padding and tied embeddings
TINY_OPT = {
    **backbones.builtin()["opt-125m"],
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "ffn_dim": 32,
    "word_embed_proj_dim": 16,
    "max_position_embeddings": 32,
    "vocab_size": 64,
}


#: a two-layer BERT small enough to build in milliseconds (a literal: no registry lookups)
TINY_BERT = {
    "model_type": "bert",
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "vocab_size": 64,
    "max_position_embeddings": 32,
    "type_vocab_size": 2,
}


@pytest.fixture
def closed_form(cli, monkeypatch):
    """``cli`` with compare's closed-form runner and real profiles (the fake engine)."""
    from memprof.engines import run

    monkeypatch.setattr(memprof.cli.compare, "_closed_form", _REAL_CLOSED_FORM)
    monkeypatch.setattr(memprof.sweep.run, "default_runner", lambda: (run, None))
    return cli


_REAL_CLOSED_FORM = memprof.cli.compare._closed_form


@pytest.fixture(scope="session")
def tiny_opt(tmp_path_factory):
    """A folder holding TINY_OPT's config.json (its path is the backbone)."""
    folder = tmp_path_factory.mktemp("opt") / "tiny-opt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_OPT))
    return str(folder)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and immune to OpenMP contention on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cli(monkeypatch, capsys, tmp_path):
    """cli(*args) -> (exit code, stdout, stderr), run in tmp_path; compare profiles every
    configuration with ``fake_run`` (add the ``closed_form`` fixture for compare's own runner)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(memprof.sweep.run, "default_runner", lambda: (fake_run, None))
    monkeypatch.setattr(memprof.sweep.run, "auto_jobs", lambda grid: 1)  # workers would not see the patches
    # compare answers from closed forms by default, which bypass fake_run: the ``closed_form`` fixture
    # restores them, and the formula cache is the test's own
    monkeypatch.setattr(memprof.cli.compare, "_closed_form", lambda *args: None)
    monkeypatch.setenv("MEMPROF_CACHE_DIR", str(tmp_path / "formula-cache"))
    monkeypatch.delenv("MEMPROF_DEBUG", raising=False)

    def invoke(*args):
        monkeypatch.setattr(sys, "argv", ["memprof", *map(str, args)])
        with pytest.raises(SystemExit) as exit_:
            main()
        out, err = capsys.readouterr()
        code = exit_.value.code
        return (0 if code is None else code), out, err

    return invoke


@pytest.fixture
def stub_plots(monkeypatch):
    """Tiny placeholder PNGs instead of matplotlib, for tests about other files (saves ~1 s a render)."""
    from memprof.reporters import plots

    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
    )

    def render(rs, out_dir):
        paths = {name: os.path.join(out_dir, name) for name in plots.PLOTS}
        for path in paths.values():
            with open(path, "wb") as f:
                f.write(png)
        return paths

    monkeypatch.setattr(plots, "render", render)
