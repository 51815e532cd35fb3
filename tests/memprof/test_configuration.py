"""One declaration of what is profiled (``memprof.results.configuration``, NOTE [ One declaration of
what is profiled ]): everything that names a configuration's fields or defaults takes them from it.
Each test here fails where a field or a default is written again, differently or not."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer

import memprof.cli
from memprof import engines
from memprof.cli import diagnose as diagnose_cli
from memprof.cli import fit as fit_cli
from memprof.cli import options
from memprof.cli.app import app
from memprof.engines import fidelity
from memprof.engines.common import ModelCache, _configuration
from memprof.engines.config import ProfileConfig
from memprof.fit.search import FitConfig
from memprof.results import configuration
from memprof.results.configuration import FIELDS, default, profiled
from memprof.results.result import KEY_FIELDS, Result
from memprof.sweep.grid import DEFAULTS, Grid

ROOT = Path(__file__).resolve().parents[2]
NAMES = [f.name for f in FIELDS]
#: every name a profiled field goes by: its own, and the grid's list of it (``seq_lens``)
ALL_NAMES = set(NAMES) | {f.sweep.name for f in FIELDS if f.sweep}


def test_profile_config_is_the_declaration():
    fields = [f for f in dataclasses.fields(ProfileConfig) if f.name != "resolved"]
    assert [f.name for f in fields] == NAMES
    for f in fields:
        declared = profiled(f.name)
        assert f.type == declared.annotation, f.name
        if declared.required:
            assert f.default is dataclasses.MISSING, f.name
        else:
            assert f.default == declared.default, f.name


def test_profile_takes_the_declaration_defaults():
    params = inspect.signature(engines.profile).parameters
    assert [n for n in NAMES if n in params] == list(params)  # the declaration's order
    assert set(KEY_FIELDS) <= set(params)  # every field of a result's key can be chosen from the API
    for name, param in params.items():
        expected = inspect.Parameter.empty if profiled(name).required else default(name)
        assert param.default == expected, name


def test_key_fields_are_derived_and_keep_their_order():
    assert KEY_FIELDS is configuration.KEY_FIELDS
    assert sorted(f.key for f in FIELDS if f.key is not None) == list(range(len(KEY_FIELDS)))
    # The order key tuples, gate tables and the committed baseline's labels use
    assert KEY_FIELDS == ("backbone", "method", "seq_len", "batch_size", "dtype", "engine", "target", "step", "loss")


def test_a_result_records_what_the_declaration_says():
    config = SimpleNamespace(**{name: f"<{name}>" for name in NAMES})
    recorded = _configuration(config)
    assert list(recorded) == list(configuration.RECORDED_FIELDS)
    result_fields = {f.name: f for f in dataclasses.fields(Result)}
    assert set(recorded) <= set(result_fields)
    for name in ("step", "loss"):  # the Result defaults that are a profile's
        assert result_fields[name].default == default(name)


def test_the_model_cache_key_is_what_a_model_depends_on():
    backbone = SimpleNamespace(config={"model_type": "bert", "num_hidden_layers": 12})
    base = {name: f"<{name}>" for name in NAMES}
    key = ModelCache.key(SimpleNamespace(**base, resolved=backbone))
    for name in NAMES:
        changed = ModelCache.key(SimpleNamespace(**{**base, name: "other"}, resolved=backbone)) != key
        assert changed == profiled(name).model, name
    # a copy of the backbone with fewer layers keeps its name (memprof.engines.composition): its config tells them apart
    shallow = SimpleNamespace(config={**backbone.config, "num_hidden_layers": 3})
    assert ModelCache.key(SimpleNamespace(**base, resolved=shallow)) != key


def test_the_grid_is_the_declaration():
    assert DEFAULTS == configuration.grid_defaults()
    assert [f.name for f in dataclasses.fields(Grid)] == list(DEFAULTS)
    # results.json's "options" keep their order (and with it the committed results' text)
    assert list(DEFAULTS) == [
        "backbone",
        "methods",
        "seq_lens",
        "batch_sizes",
        "engine",
        "target",
        "dtype",
        "attn",
        "task",
        "step",
        "loss",
    ]
    for f in dataclasses.fields(Grid):
        value = f.default_factory() if f.default is dataclasses.MISSING else f.default
        assert value == DEFAULTS[f.name], f.name
    for f in FIELDS:
        if not f.grid:
            assert f.name not in DEFAULTS
        elif f.sweep is None:
            assert DEFAULTS[f.name] == (default(f.name) if f.grid_default is configuration.SAME else f.grid_default)
        else:
            assert DEFAULTS[f.sweep.name] == list(f.sweep.default)


def test_grid_defaults_are_fresh_lists():
    first = configuration.grid_defaults()
    first["methods"].append("x")
    assert "x" not in configuration.grid_defaults()["methods"]


def test_fit_shares_the_declaration_defaults():
    fit_fields = {f.name: f for f in dataclasses.fields(FitConfig)}
    for name in ("dtype", "attn", "task", "loss"):
        assert fit_fields[name].default == default(name), name
    assert fit_fields["seq_len"].default is None and fit_fields["batch_size"].default is None  # None: searched


def _command(name: str):
    assert memprof.cli.COMMANDS  # every command registered
    return typer.main.get_command(app).commands[name]


def _profiled_params(command: str) -> dict:
    return {p.name: p for p in _command(command).params if p.name in ALL_NAMES}


@pytest.mark.parametrize("command", ["profile", "formula"])
def test_single_configuration_commands_take_the_declaration(command):
    params = _profiled_params(command)
    assert params
    for name, param in params.items():
        declared = profiled(name)
        assert param.default == declared.default, name
        assert param.opts == [declared.option], name
        assert param.help == declared.help, name


def test_compare_names_the_grid_defaults_and_gives_none():
    params = _profiled_params("compare")
    assert set(params) == set(DEFAULTS)
    for f in configuration.GRID_FIELDS:
        name, option = (f.sweep.name, f.sweep.option) if f.sweep else (f.name, f.option)
        param = params[name]
        assert param.default is None and param.opts == [option], name  # None: not given (a resume keeps its own)
        value = DEFAULTS[name]
        if value is not None:
            shown = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            assert param.help.endswith(f"(default: {shown})"), name


def test_fit_takes_the_declaration():
    params = _profiled_params("fit")
    assert params["methods"].default == ",".join(profiled("method").sweep.default)
    assert params["backbone"].default == fit_cli.BACKBONE
    assert params["seq_len"].default is None and params["batch_size"].default is None
    assert str(default("seq_len")) in params["seq_len"].help  # the length fit fixes when neither is given
    for name in ("dtype", "attn", "task", "loss"):
        assert params[name].default == default(name), name


def test_diagnose_takes_the_declaration_and_its_own_sizes():
    params = _profiled_params("diagnose")
    api = inspect.signature(fidelity.diagnose).parameters
    assert (diagnose_cli.SEQ_LEN, diagnose_cli.BATCH_SIZE) == (fidelity.SEQ_LEN, fidelity.BATCH_SIZE)
    for name, param in params.items():
        if name in ("seq_len", "batch_size"):
            assert param.default == api[name].default, name
        else:
            assert param.default == default(name), name
            if not profiled(name).required:
                assert api[name].default == default(name), name


def test_option_types_are_declared_once():
    """No command declares an option type memprof.cli.options declares: each comes from there."""
    for path in sorted((ROOT / "memprof" / "cli").glob("*.py")):
        if path.name == "options.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Subscript):
                target = node.targets[0]
                if isinstance(target, ast.Name) and ast.unparse(node.value.value) == "Annotated":
                    assert not hasattr(options, target.id), f"{path.name} declares {target.id} again"


#: Literal defaults of a profiled field's name that are not the field's default: why each may stay.
NOT_THE_PROFILES_DEFAULT = {
    ("memprof/results/result.py", "task"): "a Result's task is always text: the one resolved",
    ("memprof/fit/search.py", "step"): "fit measures the steady step: its own choice, not a default",
    ("memprof/engines/fidelity.py", "seq_len"): "diagnose's own sizes (SEQ_LEN), a test holds the CLI's equal",
    ("memprof/engines/fidelity.py", "batch_size"): "diagnose's own sizes (BATCH_SIZE)",
    ("memprof/cli/diagnose.py", "seq_len"): "diagnose's own sizes",
    ("memprof/cli/diagnose.py", "batch_size"): "diagnose's own sizes",
}


def _literal_defaults(tree: ast.AST):
    """(name, literal) of every parameter default and class-level annotated default in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            positional = a.posonlyargs + a.args
            pairs = list(zip(positional[len(positional) - len(a.defaults) :], a.defaults))
            pairs += [(arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            yield from ((arg.arg, d) for arg, d in pairs)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            yield node.target.id, node.value


def _restated_defaults() -> list[str]:
    found = []
    for path in sorted((ROOT / "memprof").rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        if where == "memprof/results/configuration.py":
            continue
        for name, value in _literal_defaults(ast.parse(path.read_text())):
            literal = isinstance(value, ast.Constant) and value.value is not None
            if name in ALL_NAMES and literal and (where, name) not in NOT_THE_PROFILES_DEFAULT:
                found.append(f"{where}:{value.lineno}: {name}={value.value!r}")
    return found


def test_no_default_is_written_again():
    """A parameter or field named after a profiled field takes its default from the declaration."""
    # engines/common.py's instrumented_step(loss="full") is the engine interface's to move
    restated = [r for r in _restated_defaults() if not r.startswith("memprof/engines/common.py:")]
    assert not restated


def test_the_scan_finds_a_restated_default():
    tree = ast.parse('def f(attn: str = "sdpa", target=None, seq_len=SEQ): ...\nclass C:\n    loss: str = "full"')
    assert sorted(name for name, v in _literal_defaults(tree) if isinstance(v, ast.Constant)) == [
        "attn",
        "loss",
        "target",
    ]


def test_the_default_attention_is_written_once():
    """The default attention, as a literal, is in the declaration only; elsewhere "sdpa" names the
    implementation itself (the list of them, and what SDPA's kernels are)."""
    attn = default("attn")
    allowed = {"memprof/results/configuration.py", "memprof/models/tasks.py", "memprof/instrument/attention.py"}
    found = set()
    for path in sorted((ROOT / "memprof").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value == attn:
                found.add(path.relative_to(ROOT).as_posix())
    assert found <= allowed, found - allowed
