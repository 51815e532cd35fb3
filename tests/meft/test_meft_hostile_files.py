"""Hostile files (issue 25 item 5): a meft_config.json with a key twice, a huge integer or deep
nesting, an absurd adapter width, and corrupt adapter weights give one MEFTError line naming the
file, through ``load_adapters`` and ``MEFTModel.from_pretrained``, and leave the model as it was."""

import json

import pytest
import torch
from meft_testing import raises_one_line, tiny_model

import meft
from meft.convert import saved_config
from meft.strict_json import MAX_DEPTH as _MAX_DEPTH

CONFIG = meft.MEFTConfig(variant="meft1", adapter_dim=4)
RESAVE = "save the adapters again with meft.save_adapters"
META, WEIGHTS = "meft_config.json", "adapter_model.safetensors"


@pytest.fixture
def saved(tmp_path):
    """A folder MEFTModel.save_pretrained wrote (a tiny float32 bert-cls, adapter_dim=4)."""
    model = meft.get_meft_model(tiny_model("bert-cls", dtype=torch.float32), CONFIG)
    model.save_pretrained(tmp_path / "adapters")
    return tmp_path / "adapters"


def _fresh():
    return tiny_model("bert-cls", dtype=torch.float32, seed=1)


def _state(model):
    """What a refused load must leave as it was: the class, every tensor, every requires_grad flag."""
    tensors = {n: t.detach().clone() for n, t in model.state_dict().items()}
    return type(model), tensors, {n: p.requires_grad for n, p in model.named_parameters()}


def _assert_state(model, before):
    cls, tensors, flags = _state(model)
    assert cls is before[0] and not meft.is_converted(model)
    assert tensors.keys() == before[1].keys() and all(torch.equal(tensors[n], before[1][n]) for n in tensors)
    assert flags == before[2]


def _meta_text(folder):
    return (folder / META).read_text()


# meta text (from the saved one) -> what the message says after the file's path
HOSTILE_META = {
    "a key twice at the top": (
        lambda t: t.replace('"model_type": "bert"', '"model_type": "bert", "model_type": "gpt2"'),
        "holds the key 'model_type' twice in one object, so it cannot be read unambiguously",
    ),
    "a key twice in meft_config": (
        lambda t: t.replace('"adapter_dim": 4', '"adapter_dim": 4, "adapter_dim": 64'),
        "holds the key 'adapter_dim' twice in one object, so it cannot be read unambiguously",
    ),
    "an integer of 5000 digits": (
        lambda t: t.replace('"adapter_dim": 4', '"adapter_dim": ' + "9" * 5000),
        "holds an integer of 5000 digits, beyond 64 bits (at most 2**63 - 1)",
    ),
    "2**63": (
        lambda t: t.replace('"adapter_dim": 4', f'"adapter_dim": {2**63}'),
        f"holds the integer {2**63}, beyond 64 bits (at most 2**63 - 1)",
    ),
    "arrays 100,000 deep": (
        lambda t: t.replace('"model_type": "bert"', '"model_type": "bert", "x": ' + "[" * 100_000 + "]" * 100_000),
        f"nests JSON deeper than {_MAX_DEPTH} levels",
    ),
    "objects 101 deep": (
        lambda t: t.replace('"model_type": "bert"', '"model_type": "bert", "x": ' + '{"a": ' * 100 + "1" + "}" * 100),
        f"nests JSON deeper than {_MAX_DEPTH} levels",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_META))
def test_a_hostile_meft_config_is_one_line_for_every_reader(saved, case):
    edit, why = HOSTILE_META[case]
    (saved / META).write_text(edit(_meta_text(saved)))
    expected = f"{str(saved / META)!r} {why}; {RESAVE}"
    for read in (saved_config, lambda p: meft.MEFTModel.from_pretrained(_fresh(), p)):
        with pytest.raises(meft.MEFTError) as exc:
            read(saved)
        assert str(exc.value) == expected
    converted = meft.convert(_fresh(), CONFIG)
    with pytest.raises(meft.MEFTError) as exc:
        meft.load_adapters(converted, saved)
    assert str(exc.value) == expected


def test_100_levels_and_the_largest_64_bit_integer_are_read(saved):
    # the bounds themselves are accepted: the files are then refused by MEFTConfig, naming the field
    deep = "[" * (_MAX_DEPTH - 1) + "]" * (_MAX_DEPTH - 1)
    (saved / META).write_text(_meta_text(saved).replace('"model_type": "bert"', f'"model_type": "bert", "x": {deep}'))
    assert saved_config(saved) == CONFIG
    (saved / META).write_text(_meta_text(saved).replace('"adapter_dim": 4', f'"adapter_dim": {2**63 - 1}'))
    assert saved_config(saved).adapter_dim == 2**63 - 1


@pytest.mark.parametrize("dim", [2**40, 2**62, 2**63 - 1])
def test_an_adapter_width_that_cannot_be_allocated_is_one_line_and_leaves_the_model(saved, dim):
    (saved / META).write_text(_meta_text(saved).replace('"adapter_dim": 4', f'"adapter_dim": {dim}'))
    model = _fresh()
    before = _state(model)
    message = raises_one_line(
        lambda: meft.MEFTModel.from_pretrained(model, saved),
        [
            f"cannot build adapters of width adapter_dim={dim} for BertForSequenceClassification (",
            "adapter_dim such as 8",
        ],
    )
    assert message.endswith("); pass an adapter_dim such as 8")
    _assert_state(model, before)
    # the same refusal from convert itself, for a config made in code
    with pytest.raises(meft.MEFTError, match=rf"^cannot build adapters of width adapter_dim={dim} "):
        meft.convert(model, meft.MEFTConfig(variant="meft1", adapter_dim=dim))
    _assert_state(model, before)


def _zip_bytes(tmp_path):
    torch.save({"w": torch.zeros(3)}, tmp_path / "t.bin")
    return (tmp_path / "t.bin").read_bytes()


CORRUPT_WEIGHTS = {
    "truncated": lambda data, tmp: data[: len(data) // 2],
    "one byte short": lambda data, tmp: data[:-1],
    "one byte more": lambda data, tmp: data + b"\0",
    "empty": lambda data, tmp: b"",
    "garbage": lambda data, tmp: b"garbage bytes, not weights" * 10,
    "a huge header length": lambda data, tmp: b"\xff" * 8 + b"{}",
    "a torch.save zip": lambda data, tmp: _zip_bytes(tmp),
}


@pytest.mark.parametrize("case", list(CORRUPT_WEIGHTS))
def test_corrupt_weights_are_one_line_for_both_apis(saved, tmp_path, case):
    weights = saved / WEIGHTS
    weights.write_bytes(CORRUPT_WEIGHTS[case](weights.read_bytes(), tmp_path))
    model = _fresh()
    before = _state(model)
    needles = [f"{str(weights)!r} is not a valid safetensors file (", f"it may be truncated or corrupt: {RESAVE}"]
    raises_one_line(lambda: meft.MEFTModel.from_pretrained(model, saved), needles)
    _assert_state(model, before)  # from_pretrained converted it, then undid the conversion
    converted = meft.convert(_fresh(), CONFIG)
    raises_one_line(lambda: meft.load_adapters(converted, saved), needles)


def test_a_whole_save_still_loads(saved):
    model = meft.MEFTModel.from_pretrained(_fresh(), saved)
    assert meft.is_converted(model) and model.meft_config == CONFIG
    assert json.loads(_meta_text(saved))["meft_config"]["adapter_dim"] == 4
