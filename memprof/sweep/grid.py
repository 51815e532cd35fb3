"""The ``compare`` grid: which methods, sequence lengths and batch sizes a sweep profiles, checked.

The CLI's comma-separated lists are parsed here (``parse_options``) and a ``Grid`` validates
itself and every configuration it holds before anything runs; ``memprof.sweep.run`` runs it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from memprof import methods as method_registry
from memprof.engines.config import ProfileConfig
from memprof.errors import MemprofError
from memprof.results import configuration

#: compare's options when none is given, by the grid's names, in results.json's "options" order
#: (``memprof.results.configuration``, NOTE [ One declaration of what is profiled ]).
DEFAULTS: dict[str, Any] = configuration.grid_defaults()
#: the fields every configuration of a grid shares (the rest are swept)
_SHARED = tuple(f.name for f in configuration.GRID_FIELDS if f.sweep is None)


# ---------------------------------------------------------------------------------------------
# Parsing the comma-separated lists the CLI takes


#: the method list that stands for every registered method (each alias left out: it profiles what it stands for)
ALL_METHODS = "all"


def parse_methods(text: str) -> list[str]:
    """``"ft,lora,meft"`` -> ``["ft", "lora", "meft"]``: non-empty, no duplicates, all registered;
    ``"all"``: every registered method, in the registry's order, aliases left out."""
    if text.strip() == ALL_METHODS:
        return [n for n in method_registry.names() if not method_registry.get(n).alias_of]
    names = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise MemprofError(
            f"method list {text!r} is empty or has an empty entry; pass comma-separated names, e.g. --methods ft,lora"
        )
    _check_methods(names)
    return names


def parse_ints(text: str, what: str, flag: str) -> list[int]:
    """``"128,256"`` -> ``[128, 256]``: whole numbers of at least 1, no duplicates."""
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise MemprofError(f"{what} list {text!r} is empty or has an empty entry; pass e.g. {flag} 128,256")
    values = []
    for part in parts:
        try:
            value = int(part)
        except ValueError:
            raise MemprofError(
                f"{what} {part!r} in {flag} {text!r} is not a whole number; pass e.g. {flag} 128,256"
            ) from None
        values.append(value)
    _check_ints(values, what, flag)
    return values


def alias_of(name: str) -> str:
    """The registered method ``name`` stands for (``meft`` -> ``meft1``), else ``name`` itself.
    MemprofError for an unknown method."""
    return method_registry.get(name).alias_of or name


def _check_methods(names: list[str]) -> None:
    """Registered, and each profiled once: no name twice, nor a method and its alias."""
    if not names:
        raise MemprofError("method list is empty; pass at least one, e.g. --methods ft,lora")
    listed: dict[str, str] = {}  # the method profiled -> the name it was listed as
    for name in names:
        if name in listed.values():
            raise MemprofError(f"method {name!r} is listed twice in --methods; list each method once")
        same = alias_of(name)
        if same in listed:
            other = listed[same]
            alias, target = (name, same) if same != name else (other, name)
            keep = ",".join(n for n in names if n != name)
            raise MemprofError(
                f"method {alias!r} is an alias of {target!r} and both are in --methods, so it would be profiled "
                f"twice; list it once, e.g. --methods {keep}"
            )
        listed[same] = name


def _check_ints(values: list[int], what: str, flag: str) -> None:
    if not values:
        raise MemprofError(f"{what} list is empty; pass at least one, e.g. {flag} 128")
    seen: set[int] = set()
    for value in values:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise MemprofError(f"{what} {value!r} in {flag} must be a whole number of at least 1; pass e.g. {flag} 128")
        if value in seen:
            raise MemprofError(f"{what} {value} is listed twice in {flag}; list each value once")
        seen.add(value)


# ---------------------------------------------------------------------------------------------
# The grid


@dataclass
class Grid:
    """What ``memprof compare`` sweeps: the product methods x sequence lengths x batch sizes.

    Validated on construction; ``configs()`` builds (and so validates) every ProfileConfig before
    anything runs, so bad input fails at once instead of after an hour of profiling.
    """

    backbone: str = DEFAULTS["backbone"]
    methods: list[str] = field(default_factory=lambda: list(DEFAULTS["methods"]))
    seq_lens: list[int] = field(default_factory=lambda: list(DEFAULTS["seq_lens"]))
    batch_sizes: list[int] = field(default_factory=lambda: list(DEFAULTS["batch_sizes"]))
    engine: str = DEFAULTS["engine"]
    target: str | None = DEFAULTS["target"]
    dtype: str = DEFAULTS["dtype"]
    attn: str = DEFAULTS["attn"]
    task: str | None = DEFAULTS["task"]
    step: str = DEFAULTS["step"]
    loss: str = DEFAULTS["loss"]

    def __post_init__(self) -> None:
        self.methods = list(self.methods)
        self.seq_lens = list(self.seq_lens)
        self.batch_sizes = list(self.batch_sizes)
        _check_methods(self.methods)
        _check_ints(self.seq_lens, "sequence length", "--seq-lens")
        _check_ints(self.batch_sizes, "batch size", "--batch-sizes")
        # Resolve target and task once, the way ProfileConfig does; ``backbone`` stays as given (a
        # config path must stay a path), ``name`` is what results call it.
        first = self._config(self.methods[0], 1, self.batch_sizes[0])  # the lengths are checked below
        self.name, self.target, self.task = first.backbone, first.target, first.task
        limit = first.resolved.max_seq_len
        if max(self.seq_lens) > limit:  # ProfileConfig would name --seq-len, which compare does not have
            raise MemprofError(
                f"sequence length {max(self.seq_lens)} in --seq-lens exceeds {self.name}'s maximum of {limit} "
                f"positions; pass sequence lengths of {limit} or less"
            )
        self.backbone_config: dict[str, Any] = dict(first.resolved.config)

    def _config(self, method: str, seq_len: int, batch_size: int) -> ProfileConfig:
        shared = {name: getattr(self, name) for name in _SHARED}
        return ProfileConfig(method=method, seq_len=seq_len, batch_size=batch_size, **shared)

    def configs(self) -> list[ProfileConfig]:
        """Every configuration, method-major (so a model cache holds one method's model at a time)."""
        return [self._config(m, s, b) for m in self.methods for b in self.batch_sizes for s in self.seq_lens]

    def options(self) -> dict[str, Any]:
        """The grid as results.json's "options" records it (``DEFAULTS``' names and order)."""
        return {name: _copy(getattr(self, name)) for name in DEFAULTS}

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Grid:
        known = {k: options[k] for k in DEFAULTS if k in options}
        return cls(**known)

    def command(self) -> str:
        """The exact command line that reproduces this grid."""
        parts = [
            "memprof compare",
            f"--backbone {shlex.quote(self.backbone)}",
            f"--methods {','.join(self.methods)}",
            f"--seq-lens {','.join(map(str, self.seq_lens))}",
            f"--batch-sizes {','.join(map(str, self.batch_sizes))}",
            f"--engine {self.engine}",
            f"--target {self.target}",
            f"--dtype {self.dtype}",
            f"--attn {self.attn}",
        ]
        if self.task:
            parts.append(f"--task {self.task}")
        if self.step != DEFAULTS["step"]:
            parts.append(f"--step {self.step}")
        if self.loss != DEFAULTS["loss"]:
            parts.append(f"--loss {self.loss}")
        return " ".join(parts)


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def parse_options(**given: Any) -> dict[str, Any]:
    """The options a user gave on the command line (None: not given), the lists parsed and checked."""
    out = {k: v for k, v in given.items() if v is not None}
    if "methods" in out:
        out["methods"] = parse_methods(out["methods"])
    if "seq_lens" in out:
        out["seq_lens"] = parse_ints(out["seq_lens"], "sequence length", "--seq-lens")
    if "batch_sizes" in out:
        out["batch_sizes"] = parse_ints(out["batch_sizes"], "batch size", "--batch-sizes")
    return out
