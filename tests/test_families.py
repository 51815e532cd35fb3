"""The family table: one file per family holds everything about it, and nothing else names one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from meft.families import Profiling, ReversibleSites, families, family_named
from memprof.models import backbones

ROOT = Path(__file__).resolve().parents[1]
FAMILY_FILES = ROOT / "meft" / "families"
NAMES = {t for f in families() for t in (f.name, *f.types)}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def family_mentions(path: Path) -> list[str]:
    """String constants (docstrings aside) that are a family name or model type, with their line."""
    tree = ast.parse(path.read_text())
    skip = _docstrings(tree)
    return [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in skip
        and node.value.lower() in NAMES
    ]


def test_no_module_outside_the_family_files_names_a_family():
    sources = [
        p
        for pkg in ("memprof", "meft")
        for p in sorted((ROOT / pkg).rglob("*.py"))
        if p.parent != FAMILY_FILES or p.name in ("__init__.py", "base.py")
    ]
    mentions = [m for p in sources for m in family_mentions(p)]
    assert not mentions


def test_the_scan_finds_a_family_name(tmp_path):
    path = ROOT / "meft" / "families" / "bert.py"
    assert any("'bert'" in m for m in family_mentions(path))


def test_every_family_file_is_complete():
    for f in families():
        assert isinstance(f.meft, ReversibleSites) and isinstance(f.profiling, Profiling), f.name
        assert callable(f.meft.find_sites) and callable(f.meft.check) and f.meft.heads, f.name
        p = f.profiling
        assert p.tasks and p.lora_targets and len(p.adapter_projections) == 2 and p.backbones, f.name
        for name, config in p.backbones.items():
            assert family_named(config["model_type"]) is f
            bb = backbones.resolve(name)
            assert (bb.family, bb.default_task) == (f.name, p.tasks[0])
            assert bb.num_layers > 0 and bb.max_seq_len > 0


def test_meft_reads_only_its_part_of_a_family():
    """NOTE [ Two clients of a family ]: outside the family files, no meft module reads ``.profiling``."""
    sources = [p for p in sorted((ROOT / "meft").rglob("*.py")) if p.parent != FAMILY_FILES]
    reads = [
        f"{p.relative_to(ROOT)}:{node.lineno}"
        for p in sources
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "profiling"
    ]
    assert not reads


def test_a_family_part_refuses_an_incomplete_declaration():
    from meft.errors import MEFTError

    with pytest.raises(MEFTError, match=r"adapter_projections=\('fc2',\) is not two paths"):
        Profiling(tasks=("classification",), lora_targets=("q_proj",), adapter_projections=("fc2",))
    with pytest.raises(MEFTError, match="ia3_feedforward=.* names modules outside ia3_targets"):
        Profiling(
            tasks=("classification",),
            lora_targets=("q_proj",),
            adapter_projections=("o", "fc2"),
            ia3_targets=("k_proj",),
            ia3_feedforward=("fc2",),
        )


@pytest.mark.parametrize(
    "name",
    ["llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "qwen2.5-0.5b", "qwen2.5-7b", "mistral-7b", "gpt2", "gpt2-medium"],
)
def test_the_new_decoders_are_registered(name):
    assert name in backbones.known_names()


# -- bad input: one clear line each -------------------------------------------------------------


def _config_file(tmp_path, base: str, **changes) -> str:
    import json

    path = tmp_path / "config.json"
    path.write_text(json.dumps({**backbones.builtin()[base], **changes}))
    return str(path)


@pytest.mark.parametrize(
    "base, changes, needle",
    [
        (
            "llama-3.2-1b",
            {"model_type": "t5"},
            "model_type 't5'; supported families are bart, bert, gpt2, llama, mistral, opt, qwen2, roberta",
        ),
        (
            "qwen2.5-0.5b",
            {"num_attention_heads": 5},
            "num_attention_heads=5 does not divide hidden_size=896; pass a head count that divides 896",
        ),
        (
            "llama-3.1-8b",
            {"num_key_value_heads": 3},
            "num_key_value_heads=3 does not divide num_attention_heads=32; pass a divisor of 32",
        ),
        ("gpt2", {"n_head": 7}, "n_head=7 does not divide n_embd=768"),
        ("mistral-7b", {"hidden_act": "swiglu"}, "hidden_act='swiglu' is not an activation transformers knows"),
        (
            "llama-3.2-1b",
            {"max_position_embeddings": -5},
            "max_position_embeddings=-5 must be a count from 1 to 2147483648",
        ),
        ("gpt2", {"n_layer": "12"}, "n_layer='12' is not a whole number"),
        # found by tests/memprof/test_fuzz.py: nulls, a model_type that is not a string, a padding id
        # the embeddings cannot hold
        ("bert-base", {"hidden_size": None}, "hidden_size=None is null; write a value such as the default 768"),
        ("gpt2", {"activation_function": None}, "activation_function=None is null"),
        ("bart-base", {"decoder_start_token_id": None}, "decoder_start_token_id=None is null"),
        ("gpt2", {"model_type": []}, "has model_type []; supported families are"),
        ("bart-base", {"pad_token_id": 50265}, "pad_token_id=50265 is not a token id of the vocabulary (0 to 50264)"),
        (
            "llama-3.2-1b",
            {"rope_scaling": 1},
            "transformers refuses it (StrictDataclassFieldValidationError: Validation "
            "error for field 'rope_parameters'",
        ),
        ("gpt2", {"layer_norm_epsilon": 0}, "Field 'layer_norm_epsilon' expected float, got int (value: 0)"),
        ("bart-base", {"eos_token_id": []}, "eos_token_id=[] is not one token id"),
        ("bart-base", {"eos_token_id": None}, "eos_token_id=None is not one token id"),
    ],
)
def test_bad_configs_are_one_line(tmp_path, base, changes, needle):
    from memprof.errors import MemprofError

    with pytest.raises(MemprofError) as info:
        backbones.resolve(_config_file(tmp_path, base, **changes))
    message = str(info.value)
    assert needle in message and "\n" not in message and "config.json" in message


def test_a_sequence_longer_than_the_positions_is_one_line():
    from memprof.engines.config import ProfileConfig
    from memprof.errors import MemprofError

    with pytest.raises(MemprofError, match="sequence length 2048 exceeds gpt2's maximum of 1024 positions"):
        ProfileConfig("gpt2", seq_len=2048)
