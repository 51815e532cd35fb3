"""``memprof backbones`` and ``memprof methods``: names never cut short (piped, in a narrow or wide
terminal), ``--json``, ``--version``, NO_COLOR, and methods from another installed package
(entry-point group ``memprof.methods``)."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from memprof import methods
from memprof.methods import registry
from memprof.models import backbones

THIRD_PARTY = Path(__file__).parent / "third_party"


def run_in_terminal(args, columns, **env):
    """Run the memprof entry point in a pseudo-terminal ``columns`` wide; return everything it printed."""
    pty = pytest.importorskip("pty")
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "MEMPROF_DEBUG")
    }
    environ.update(COLUMNS=str(columns), LINES="50", TERM="xterm-256color", **env)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from memprof.cli import main; main()", *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=environ,
        close_fds=True,
    )
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    proc.wait(timeout=600)
    return out.decode()


def words(text: str) -> set[str]:
    """The words of ``text`` with the terminal's styles taken out."""
    import re

    return set(re.sub(r"\x1b\[[0-9;]*m", " ", text).split())


@pytest.fixture(scope="module")
def backbone_rows():
    from memprof.cli import backbones as command

    return [command._row(e) for e in command._entries()]


@pytest.fixture
def terminal(monkeypatch):
    """terminal(width) -> a StringIO that the CLI's console writes to as a terminal of that width."""

    def make(width):
        out = io.StringIO()
        console = Console(file=out, width=width, force_terminal=True, color_system=None)
        # sys.modules: the name memprof.cli.app is the typer app itself
        monkeypatch.setattr(sys.modules["memprof.cli.app"], "console", console)
        monkeypatch.setattr(sys.modules["memprof.cli.views"], "console", console)
        return out

    return make


def test_piped_backbones_are_plain_columns_with_every_full_name(cli):
    code, out, err = cli("backbones")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["name", "family", "default", "task", "layers", "max", "seq", "parameters", "weights"]
    assert [line.split()[0] for line in lines[1:]] == backbones.known_names()
    assert not set(out) & set("│┃━─…")  # no box, nothing cut
    gpt2 = next(line for line in lines if line.startswith("gpt2 "))
    assert gpt2.split() == ["gpt2", "gpt2", "causal-lm", "12", "1024", "124.4", "M", "random"]


def test_backbones_json_has_every_full_name_and_exact_counts(cli):
    code, out, _ = cli("backbones", "--json")
    entries = json.loads(out)
    assert code == 0 and [e["name"] for e in entries] == backbones.known_names()
    gpt2 = next(e for e in entries if e["name"] == "gpt2")
    # GPT-2 small: 124,439,808 parameters (embeddings tied), 12 layers, 1024 positions
    assert (gpt2["parameters"], gpt2["layers"], gpt2["max_seq_len"], gpt2["default_task"]) == (
        124439808,
        12,
        1024,
        "causal-lm",
    )


@pytest.mark.parametrize("width", [40, 80, 200])
def test_terminal_listing_keeps_every_name_whole_at_any_width(terminal, backbone_rows, width):
    from memprof.cli.views import print_listing

    out = terminal(width)
    print_listing(
        "backbones",
        ("name", "family", "default task", "layers", "max seq", "parameters", "weights"),
        backbone_rows,
        right=("layers", "max seq", "parameters"),
    )
    text = out.getvalue()
    shown = words(text)
    assert all(word in shown for row in backbone_rows for value in row for word in value.split())
    assert "…" not in text
    if width == 200:  # wide enough: a table, one line a backbone
        firsts = [line.split()[:1] for line in text.splitlines()]
        assert all([row[0]] in firsts for row in backbone_rows)
    if width == 40:  # too narrow for a table: one block per backbone, no line over the width
        assert f"  default task: {backbone_rows[0][2]}" in text.splitlines()
        assert max(map(len, text.splitlines())) <= 40


def test_backbones_in_a_40_column_terminal(backbone_rows):
    """``COLUMNS=40 memprof backbones``, end to end in a pseudo-terminal."""
    shown = words(run_in_terminal(["backbones"], 40))
    assert {row[0] for row in backbone_rows} <= shown and "…" not in shown


def test_no_color_is_respected():
    colored = run_in_terminal(["profile", "--seq-len", "abc"], 80)
    plain = run_in_terminal(["profile", "--seq-len", "abc"], 80, NO_COLOR="1")
    assert "error: invalid value 'abc' for --seq-len" in colored.replace("\x1b[0m", "").replace("\x1b[1;31m", "")
    assert "\x1b[1;31m" in colored  # bold red "error:"
    assert "31m" not in plain and "invalid value 'abc' for --seq-len" in plain


def test_methods_json_lists_every_method_with_what_it_trains(cli):
    code, out, _ = cli("methods", "--json")
    entries = {e["name"]: e for e in json.loads(out)}
    assert code == 0 and list(entries) == methods.names()
    assert all(e["description"] and e["trains"] for e in entries.values()), "a method without its rule"
    assert entries["ft"]["trains"] == "every parameter" and entries["ft"]["alias_of"] is None
    assert entries["meft"]["alias_of"] == "meft1"


def test_methods_listing(cli):
    code, out, _ = cli("methods")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["name", "description", "trains"]
    assert [line.split()[0] for line in lines[1:]] == methods.names()
    ft = lines[1 + methods.names().index("ft")]
    assert ft.startswith("ft ") and methods.get("ft").description in ft and ft.endswith("  every parameter")


def test_diagnose_json(cli, tmp_path):
    tiny = {
        **backbones.builtin()["bert-base"],
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "vocab_size": 64,
    }
    (tmp_path / "tiny-bert").mkdir()
    (tmp_path / "tiny-bert" / "config.json").write_text(json.dumps(tiny))
    code, out, _ = cli(
        "diagnose", "--backbone", str(tmp_path / "tiny-bert"), "--seq-len", "8", "--batch-size", "1", "--json"
    )
    report = json.loads(out)
    assert code == 0 and (report["variant"], report["arithmetic"], report["dtype"], report["seq_len"]) == (
        "meft1",
        "exact",
        "fp32",
        8,
    )
    # diagnose makes every layer reversible; in exact arithmetic both are rebuilt bit for bit
    assert [layer["max_abs"] for layer in report["layers"]] == [0.0, 0.0] and report["missing"] == []


def test_version(cli):
    from memprof.version import __version__

    code, out, _ = cli("--version")
    assert code == 0 and out == f"memprof {__version__}\n"


def _install(tmp_path, monkeypatch, entry_points: str) -> None:
    """What pip would leave for an installed package: a dist-info with ``entry_points`` on sys.path."""
    dist = tmp_path / "memprof_linear_probe-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: memprof-linear-probe\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(entry_points)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(THIRD_PARTY))


@pytest.fixture
def fresh_registry(monkeypatch):
    """The registry as it is before any entry point is loaded; what a test registers is dropped after."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    yield
    sys.modules.pop("memprof_linear_probe", None)


def test_a_method_from_another_package(cli, tmp_path, monkeypatch, fresh_registry):
    from memprof.instrument.params import count_params
    from memprof.models.tasks import build_model

    _install(tmp_path, monkeypatch, "[memprof.methods]\nlinear-probe = memprof_linear_probe\n")
    code, out, _ = cli("methods", "--json")
    entries = {e["name"]: e for e in json.loads(out)}
    assert code == 0 and list(entries)[-1] == "linear-probe"
    assert entries["linear-probe"]["trains"] == "the task head"
    bb = backbones.resolve("bert-base")
    model = methods.get("linear-probe").apply(build_model(bb, device="meta"), bb, "classification")
    trainable, _ = count_params(model)
    assert trainable == 768 * 2 + 2  # the classifier (768 -> 2, with bias); the pooler stays frozen


def test_a_broken_entry_point_is_left_out_with_a_warning(tmp_path, monkeypatch, fresh_registry):
    _install(tmp_path, monkeypatch, "[memprof.methods]\nbroken = memprof_no_such_module\n")
    before = list(registry._REGISTRY)
    with pytest.warns(
        UserWarning,
        match=r"memprof method entry point 'broken' \(memprof-linear-probe "
        r"memprof_no_such_module\) left out: ModuleNotFoundError",
    ):
        assert methods.names() == before
