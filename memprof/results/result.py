"""The versioned result of one profiled training step, and of a sweep of them.

This is the only thing reporters, the regression gate and ``fit`` read: engines fill it, nothing
else runs a model. JSON round-trips are exact (integers stay integers, byte counts are bytes).
"""

from __future__ import annotations

import functools
import json
import platform
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from memprof.errors import MemprofError
from memprof.results import configuration
from memprof.results.files import read_json, write_atomically
from memprof.results.schema import MISSING, Reader, describe_value, is_whole
from memprof.results.timeline import Timeline
from memprof.version import __version__

SCHEMA_VERSION = 4
#: Versions this memprof reads. Version 2 added the category ``reversible_bits`` (MEFT's kept bits);
#: a version 1 file is a version 2 file without it (no version 1 result had such bits: exact MEFT
#: came with version 2), so it is read with 0 there. A version 1 memprof refuses version 2 files
#: rather than drop those bytes from its per-category split.
#: Version 3 added ``step`` (which training step was profiled, ``STEPS``); older files profiled the
#: first step, so they are read with ``"first"``.
#: Version 3 also added ``timeline`` (live bytes by kind through the step, ``memprof.results.timeline``),
#: null for a result without one; older files are read with null.
#: Version 4 added ``loss`` (how the step computed its loss, ``LOSSES``); older files used the
#: model's own loss, so they are read with ``"full"``.
READABLE_SCHEMA_VERSIONS = (1, 2, 3, 4)

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

#: Which training step a result profiled: the first (optimizer state created inside it) or a
#: steady one (optimizer state resident from the start); NOTE [ First and steady steps ].
STEPS = ("first", "steady")

#: How a step computed its loss: the model's own (``full``; a causal LM materialises its logits), or
#: a causal-LM loss over chunks of tokens (``chunked``, ``memprof.models.losses``).
LOSSES = ("full", "chunked")

#: What identifies a configuration across runs: a sweep resumes, and the gate matches, on these
#: (``memprof.results.configuration``, NOTE [ One declaration of what is profiled ]).
KEY_FIELDS = configuration.KEY_FIELDS
#: Key fields added after the first results were written: the schema version that added each, and
#: what a result written before it profiled (what it is read as).
LATER_KEY_FIELDS = {"step": (3, "first"), "loss": (4, "full")}

#: Columns of ``Result.layers``: one row per module that saved something.
LAYER_COLUMNS = ("module", "saved_bytes", *CATEGORIES)

#: Memory fields only the cuda engine fills (NVML's only where pynvml is installed); null otherwise.
CUDA_ONLY_METRICS = ("cuda_max_allocated", "cuda_max_reserved", "nvml_used")
#: The CUDA-only metrics a result always holds, by the engine that wrote it (``Result.engine``): null
#: there is unusable input, while null for any other is unmeasured (NVML's is never certain). Readers
#: of results (the gate) decide from this without loading an engine; each engine declares the same
#: as ``Engine.measures`` (memprof/engines/base.py; tests/test_engine_names.py holds the two equal).
ALWAYS_MEASURED: dict[str, tuple[str, ...]] = {"cuda": ("cuda_max_allocated", "cuda_max_reserved")}


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


def key_label(key: tuple) -> str:
    """``("bert-base", "ft", 128, 8, "fp32", "fake", "cuda", "first", "full")`` -> ``bert-base ft seq=128 batch=8
    fp32 fake->cuda``; a step other than the first and a loss other than the full one are named at the end
    (``... fake->cuda steady chunked loss``)."""
    k = dict(zip(KEY_FIELDS, key))
    where = k["engine"] if k["engine"] == k["target"] else f"{k['engine']}->{k['target']}"
    step, loss = k["step"], k["loss"]
    later = ("" if step == configuration.default("step") else f" {step}") + (
        "" if loss == configuration.default("loss") else f" {loss} loss"
    )
    return f"{k['backbone']} {k['method']} seq={k['seq_len']} batch={k['batch_size']} {k['dtype']} {where}{later}"


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
    step: str = configuration.default("step")
    loss: str = configuration.default("loss")
    status: str = "ok"
    message: str = ""
    trainable_params: int = 0
    total_params: int = 0
    memory: Memory = field(default_factory=Memory)
    layers: pd.DataFrame = field(default_factory=empty_layers)
    step_time_s: float | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    #: live bytes by kind through the step, downsampled (the engines fill it; None for a failed one)
    timeline: Timeline | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise MemprofError(f"result status {self.status!r} is not one of {', '.join(STATUSES)}")

    @property
    def key(self) -> tuple:
        """What identifies a configuration across runs (the gate matches on this): ``config_key``."""
        return config_key(self)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("memory", "layers", "timeline")}
        out["memory"] = asdict(self.memory)
        out["timeline"] = self.timeline.to_dict() if self.timeline is not None else None
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
    def from_dict(cls, data: dict[str, Any], *, source: str | Path | None = None) -> Result:
        """The Result ``data`` (``to_dict``'s form, schema version 1 to 4) holds, checked against the
        schema (NOTE [ Reading results ]); MemprofError naming ``source`` (the file, if any), the
        configuration and the field otherwise."""
        where = f"results file {str(source)!r}: result" if source is not None else "result"
        fix = "regenerate the file with memprof" if source is not None else "regenerate the result with memprof"
        return _read_result(data, where, fix)


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
    """A sweep: every result plus the command and options that produced them (``results.json``).

    ``source`` is the file it was read from ("" when built in Python); it is not written, and only
    names the file in error messages (the gate's, for one)."""

    results: list[Result] = field(default_factory=list)
    command: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    source: str = field(default="", compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "command": self.command,
            "options": self.options,
            "results": [r.to_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str | Path | None = None) -> ResultSet:
        """The ResultSet ``data`` (``to_dict``'s form) holds, every result checked against the schema
        (NOTE [ Reading results ]); MemprofError naming ``source`` (the file, if any), the result's
        index and configuration, and the field otherwise."""
        where = f"results file {str(source)!r}" if source is not None else "results"
        fix = "regenerate the file with memprof" if source is not None else "regenerate the results with memprof"
        if not isinstance(data, dict):
            raise MemprofError(
                f"{where} is {describe_value(data)}, must be an object holding {', '.join(_SET_FIELDS)}; {fix}"
            )
        version = data.get("schema_version", MISSING)
        if not _is_readable(version):
            has = "no schema_version" if version is MISSING else f"schema_version {describe_value(version)}"
            again = f"re-run the sweep that wrote {str(source)!r}" if source is not None else "re-run the sweep"
            raise MemprofError(
                f"results file has {has}, this memprof reads {_readable()}; {again} with this version of memprof"
            )
        check = Reader(where, fix)
        check.fields(data, "", _SET_FIELDS)
        results = data["results"] if "results" in data else MISSING
        if not isinstance(results, list):
            check.bad("results", results, "an array of results")
        return cls(
            results=[_read_result(r, f"{where}: results[{i}]", fix) for i, r in enumerate(results)],
            command=check.text(data.get("command", MISSING), "command"),
            options=check.tree(data.get("options", MISSING), "options"),
            source=str(source) if source is not None else "",
        )


# ---------------------------------------------------------------------------------------------
# Reading: NOTE [ Reading results ]
#
# A results file is checked against the schema as it is read, and refused (one MemprofError line:
# ``<file>: results[<i>] (<configuration>): <field> is <value>, must be <constraint>; <fix>``)
# rather than read into something a report, the gate or a resumed sweep would trust:
#   - every field ``to_dict`` writes is present (the CUDA-only memory fields and ``timeline`` may be
#     null or absent),
#     and no other field (a misspelt one would otherwise be dropped without a word);
#   - strings are strings; counts are whole numbers (a JSON boolean is not one, nor is 5.0), byte
#     counts in ``memory`` and ``layers`` from 0 to 2**63 - 1 (int64, what the tables hold);
#     seq_len and batch_size at least 1 (0 too for memprof.track's); step_time_s null or a finite number >= 0;
#   - status is one of STATUSES, a layer's categories are CATEGORIES;
#   - ``environment`` is an object of strings; ``options`` (free-form) an object holding no NaN or
#     Infinity anywhere: the json module reads those literals (and 1e999 as infinity), JSON has neither;
#   - a key twice in one object (the json module would keep the last) is refused.
# ``load_results`` raises MemprofError, and nothing else, for any file. The value checks are
# ``memprof.results.schema.Reader``'s and the strict JSON read is ``memprof.results.files.read_json``: they
# know JSON, not Results, so they sit below this module.

#: the engine name of a result ``memprof.track`` measured in a user's own step
TRACK_ENGINE = "track"
_SET_FIELDS = ("schema_version", "command", "options", "results")
_TEXT_FIELDS = ("backbone", "method", "engine", "target", "dtype", "attn_implementation", "task", "message")
_RESULT_FIELDS = tuple(f.name for f in fields(Result))


def _is_readable(version: Any) -> bool:
    return type(version) is int and version in READABLE_SCHEMA_VERSIONS


def _older_default(data: dict, name: str) -> Any:
    """What a result written before the key field ``name`` existed profiled (``LATER_KEY_FIELDS``),
    if ``data`` is such a result and lacks it; else None."""
    version = data.get("schema_version")
    added, default = LATER_KEY_FIELDS[name] if name in LATER_KEY_FIELDS else (0, None)
    return default if name not in data and _is_readable(version) and version < added else None


def _label(data: dict) -> str:
    """The configuration a raw result dict names, for messages (``?`` for a field it lacks)."""
    parts = []
    for name in KEY_FIELDS:
        value = data.get(name, _older_default(data, name))
        if isinstance(value, str) and value.isprintable():
            parts.append(value if len(value) <= 60 else value[:57] + "...")
        elif is_whole(value) and abs(value) < 10**12:
            parts.append(int(value))
        else:
            parts.append("?")
    return key_label(tuple(parts))


def _read_result(data: Any, where: str, fix: str) -> Result:
    """``Result.from_dict`` for a result at ``where`` (a file, an index): NOTE [ Reading results ]."""
    if not isinstance(data, dict):
        raise MemprofError(f"{where} is {describe_value(data)}, must be an object holding a result; {fix}")
    check = Reader(f"{where} ({_label(data)})", fix)
    version = data.get("schema_version", MISSING)
    if not _is_readable(version):
        raise MemprofError(
            f"{check.where}: schema_version is {describe_value(version)}, must be {_readable()} (the "
            "versions this memprof reads); re-run the profile with this version of memprof"
        )
    check.fields(data, "", _RESULT_FIELDS)
    get = lambda name: data.get(name, MISSING)  # noqa: E731
    kwargs: dict[str, Any] = {name: check.text(get(name), name) for name in _TEXT_FIELDS}
    status = check.text(get("status"), "status")
    if status not in STATUSES:
        check.bad("status", status, f"one of {', '.join(STATUSES)}")
    step = _older_default(data, "step") or check.text(get("step"), "step")
    if step not in STEPS:
        check.bad("step", step, f"one of {', '.join(STEPS)}")
    loss = _older_default(data, "loss") or check.text(get("loss"), "loss")
    if loss not in LOSSES:
        check.bad("loss", loss, f"one of {', '.join(LOSSES)}")
    kwargs.update(
        status=status,
        step=step,
        loss=loss,
        # 0 only from memprof.track, for a step whose model took no (batch, seq) input
        seq_len=check.whole(get("seq_len"), "seq_len", lowest=0 if kwargs["engine"] == TRACK_ENGINE else 1),
        batch_size=check.whole(get("batch_size"), "batch_size", lowest=0 if kwargs["engine"] == TRACK_ENGINE else 1),
        trainable_params=check.whole(get("trainable_params"), "trainable_params"),
        total_params=check.whole(get("total_params"), "total_params"),
        memory=_read_memory(check, get("memory")),
        layers=_read_layers(check, get("layers")),
        step_time_s=check.seconds(get("step_time_s"), "step_time_s"),
        timeline=None if data.get("timeline") is None else Timeline.read(check, data["timeline"]),
        environment=check.strings(get("environment"), "environment"),
        schema_version=SCHEMA_VERSION,  # read into this version's form, written as this version
    )
    return Result(**kwargs)


def _read_memory(check: Reader, data: Any) -> Memory:
    names = tuple(f.name for f in fields(Memory))
    check.fields(data, "memory", names)
    return Memory(
        **{n: check.nbytes(data.get(n, MISSING), f"memory.{n}", nullable=n in CUDA_ONLY_METRICS) for n in names}
    )


def _read_layers(check: Reader, data: Any) -> pd.DataFrame:
    if not isinstance(data, list):
        check.bad("layers", data, "an array of {module, saved_bytes, categories} records")
    rows = []
    for i, rec in enumerate(data):
        name = f"layers[{i}]"
        check.fields(rec, name, ("module", "saved_bytes", "categories"))
        row = {
            "module": check.text(rec.get("module", MISSING), f"{name}.module"),
            "saved_bytes": check.nbytes(rec.get("saved_bytes", MISSING), f"{name}.saved_bytes"),
        }
        cats = check.fields(rec.get("categories", MISSING), f"{name}.categories", CATEGORIES)
        row.update({c: check.nbytes(cats[c], f"{name}.categories.{c}") if c in cats else 0 for c in CATEGORIES})
        rows.append(row)
    if not rows:
        return empty_layers()
    return pd.DataFrame(rows, columns=list(LAYER_COLUMNS)).astype({c: "int64" for c in LAYER_COLUMNS[1:]})


# ---------------------------------------------------------------------------------------------
# Files


def write_json(obj: Result | ResultSet, path: str | Path) -> Path:
    """Write ``obj.to_dict()`` to ``path`` atomically: the JSON goes to a temporary file in the same
    folder, which then replaces ``path`` (``os.replace``), so a crash or Ctrl-C at any moment leaves
    either the old file or the new one, and never a stray temporary file.

    Raises MemprofError naming ``path`` when it is a folder, its folder does not exist or cannot be
    written, or the object holds what JSON cannot (NaN, infinity): nothing is written then.
    """
    path = Path(path)
    try:
        text = json.dumps(obj.to_dict(), indent=1, allow_nan=False) + "\n"
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise MemprofError(f"cannot write {str(path)!r}: {_unwritable(obj, exc)}") from None
    return write_atomically(path, text)


def _unwritable(obj: Any, exc: BaseException) -> str:
    """Why ``obj`` cannot be written: the schema's message naming the field where it finds one."""
    try:
        data = obj.to_dict()
        (ResultSet if "results" in data else Result).from_dict(data)
    except MemprofError as refused:
        return str(refused)
    except Exception:  # noqa: BLE001 - to_dict itself failed: say what json or to_dict said
        pass
    what = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"it holds a value JSON cannot hold ({what}); nothing was written"


def load_results(path: str | Path) -> ResultSet:
    """Read a ``results.json`` (a sweep) or a single profile's JSON as a ResultSet.

    Every result is checked against the schema (NOTE [ Reading results ]). Raises MemprofError,
    and nothing else, naming the path (and the result and field where one is at fault), for a
    missing or unreadable file, bad JSON, another schema version or anything the schema refuses.
    """
    path = Path(path)
    name = str(path)
    data = read_json(path)
    if "results" in data:
        return ResultSet.from_dict(data, source=name)
    if "backbone" in data or "memory" in data:
        result = Result.from_dict(data, source=name)
        return ResultSet(results=[result], schema_version=result.schema_version, source=name)
    raise MemprofError(f"results file {name!r} is not a memprof result or results.json; pass a file written by memprof")


def environment(device_name: str = "cpu") -> dict[str, Any]:
    """Versions that can move the numbers, recorded in every result."""
    v = _versions()
    return {
        **{k: v[k] for k in ("python", "platform", "torch", "transformers")},
        "device": device_name,
        "peft": v["peft"],
        "memprof": __version__,
    }


@functools.cache
def _versions() -> dict[str, str]:
    """The installed distributions' versions, read from their metadata: importing peft only to read
    its ``__version__`` costs seconds, and a result evaluated from a formula imports nothing else."""
    import importlib
    import importlib.metadata

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # a source tree on the path, without metadata
            return str(importlib.import_module(name).__version__)

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{name: version(name) for name in ("torch", "transformers", "peft")},
    }
