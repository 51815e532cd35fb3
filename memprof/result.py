"""The versioned result of one profiled training step, and of a sweep of them.

This is the only thing reporters, the regression gate and ``fit`` read: engines fill it, nothing
else runs a model. JSON round-trips are exact (integers stay integers, byte counts are bytes).
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from memprof.errors import MemprofError
from memprof.version import __version__

SCHEMA_VERSION = 2
#: Versions this memprof reads. Version 2 added the category ``reversible_bits`` (MEFT's kept bits);
#: a version 1 file is a version 2 file without it (no version 1 result had such bits: exact MEFT
#: came with version 2), so it is read with 0 there. A version 1 memprof refuses version 2 files
#: rather than drop those bytes from its per-category split.
READABLE_SCHEMA_VERSIONS = (1, 2)

#: Categories a saved tensor is grouped into, by the autograd node (operator) that saved it.
CATEGORIES = (
    "linear_input",
    "attention_scores",
    "softmax_output",
    "dropout_mask",
    "normalization",
    "activation_fn",
    "embedding",
    "reversible_bits",
    "other",
)

STATUSES = ("ok", "oom", "error")

#: Columns of ``Result.layers``: one row per module that saved something.
#: What identifies a configuration across runs: a sweep resumes, and the gate matches, on these.
KEY_FIELDS = ("backbone", "method", "seq_len", "batch_size", "dtype", "engine", "target")

LAYER_COLUMNS = ("module", "saved_bytes", *CATEGORIES)


@dataclass
class Memory:
    """Byte counts of one training step.

    ``saved_activations`` is what the saved-tensor hooks saw (unique storages, parameters and
    buffers excluded); ``peak_activations`` is the most activation bytes live at once anywhere in
    the step, from the live-storage tracker; ``unattributed`` is activation memory alive at the end
    of the forward pass that the hooks did not see (tensors kept as ``ctx`` attributes or by Python
    references, the forward's unsaved outputs, the batch's unsaved tensors; a non-reentrant
    checkpoint's layer inputs are saved through the hooks, so they are in ``saved_activations``).
    ``gradients``, ``optimizer_state``, ``temporaries`` and ``activations_at_peak`` are their
    values at the moment of ``peak`` (with ``parameters`` they add up to ``peak``). The ``cuda_*``
    and ``nvml_*`` fields are filled only by the cuda engine.
    """

    parameters: int = 0
    gradients: int = 0
    optimizer_state: int = 0
    saved_activations: int = 0
    peak_activations: int = 0
    temporaries: int = 0
    peak: int = 0
    unattributed: int = 0
    activations_at_peak: int = 0
    cuda_max_allocated: int | None = None
    cuda_max_reserved: int | None = None
    nvml_used: int | None = None


def config_key(config: Any) -> tuple:
    """The key of a configuration: its ``KEY_FIELDS``, read from a Result or a ProfileConfig alike."""
    return tuple(getattr(config, name) for name in KEY_FIELDS)


def empty_layers() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object" if c == "module" else "int64") for c in LAYER_COLUMNS})


@dataclass
class Result:
    """One configuration profiled by one engine.

    ``layers`` is a DataFrame with columns ``LAYER_COLUMNS``: the module path (``""`` is the model
    itself), the unique bytes its saved tensors hold, and those bytes split by category.
    """

    backbone: str
    method: str
    engine: str
    target: str
    dtype: str
    attn_implementation: str
    seq_len: int
    batch_size: int
    task: str = ""
    status: str = "ok"
    message: str = ""
    trainable_params: int = 0
    total_params: int = 0
    memory: Memory = field(default_factory=Memory)
    layers: pd.DataFrame = field(default_factory=empty_layers)
    step_time_s: float | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise MemprofError(f"result status {self.status!r} is not one of {', '.join(STATUSES)}")

    @property
    def key(self) -> tuple:
        """What identifies a configuration across runs (the gate matches on this): ``config_key``."""
        return config_key(self)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("memory", "layers")}
        out["memory"] = asdict(self.memory)
        out["layers"] = [
            {
                "module": str(row["module"]),
                "saved_bytes": int(row["saved_bytes"]),
                "categories": {c: int(row[c]) for c in CATEGORIES if int(row[c])},
            }
            for row in self.layers.to_dict("records")
        ]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Result":
        version = data.get("schema_version")
        if version not in READABLE_SCHEMA_VERSIONS:
            raise MemprofError(
                f"result has schema_version {version!r}, this memprof reads {_readable()}; "
                "re-run the profile with this version of memprof"
            )
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known and k not in ("memory", "layers")}
        kwargs["memory"] = Memory(**{k: v for k, v in data.get("memory", {}).items() if k in Memory.__dataclass_fields__})
        kwargs["layers"] = layers_frame(data.get("layers", []))
        kwargs["schema_version"] = SCHEMA_VERSION  # read into this version's form, written as this version
        return cls(**kwargs)


def _readable() -> str:
    return " or ".join(map(str, READABLE_SCHEMA_VERSIONS))


def layers_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Build ``Result.layers`` from JSON records ``{module, saved_bytes, categories: {...}}``."""
    if not records:
        return empty_layers()
    rows = []
    for rec in records:
        row = {"module": rec["module"], "saved_bytes": int(rec["saved_bytes"])}
        cats = rec.get("categories", {})
        row.update({c: int(cats.get(c, 0)) for c in CATEGORIES})
        rows.append(row)
    return pd.DataFrame(rows, columns=list(LAYER_COLUMNS)).astype({c: "int64" for c in LAYER_COLUMNS[1:]})


@dataclass
class ResultSet:
    """A sweep: every result plus the command and options that produced them (``results.json``)."""

    results: list[Result] = field(default_factory=list)
    command: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "command": self.command,
            "options": self.options,
            "results": [r.to_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ResultSet":
        if data.get("schema_version") not in READABLE_SCHEMA_VERSIONS:
            raise MemprofError(
                f"results file has schema_version {data.get('schema_version')!r}, this memprof reads "
                f"{_readable()}; re-run the sweep with this version of memprof"
            )
        return cls(
            results=[Result.from_dict(r) for r in data.get("results", [])],
            command=data.get("command", ""),
            options=data.get("options", {}),
        )


def write_json(obj: Result | ResultSet, path: str | Path) -> Path:
    """Write atomically (temp file, then rename) so an interrupted write never leaves bad JSON."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj.to_dict(), indent=1) + "\n")
    tmp.replace(path)
    return path


def load_results(path: str | Path) -> ResultSet:
    """Read a ``results.json`` (a sweep) or a single profile's JSON as a ResultSet.

    Raises MemprofError, naming the path, for a missing file, bad JSON or another schema version.
    """
    path = Path(path)
    if not path.is_file():
        raise MemprofError(f"results file {str(path)!r} does not exist or is not a file; pass the path of a results.json")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MemprofError(f"results file {str(path)!r} is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc}); pass a results.json written by memprof") from None
    if not isinstance(data, dict):
        raise MemprofError(f"results file {str(path)!r} holds JSON but not a memprof result; pass a results.json written by memprof")
    if "results" in data:
        return ResultSet.from_dict(data)
    if "backbone" in data and "memory" in data:
        result = Result.from_dict(data)
        return ResultSet(results=[result], schema_version=result.schema_version)
    raise MemprofError(f"results file {str(path)!r} is not a memprof result or results.json; pass a file written by memprof")


def environment(device_name: str = "cpu") -> dict[str, Any]:
    """Versions that can move the numbers, recorded in every result."""
    import peft
    import torch
    import transformers

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device_name,
    }
    env["peft"] = peft.__version__
    env["memprof"] = __version__
    return env
