"""Converting a Hugging Face model to MEFT and back, and saving only what was trained.

``convert`` replaces each layer stack's ``nn.ModuleList`` by a one-element list holding a
``MEFTStack``, which keeps the original layers inside (wrap, don't patch): the family's own forward
(embeddings, masks, final LayerNorm, heads) runs unchanged and its layer loop calls the whole
reversible stack once. ``unconvert`` puts the original lists back.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from meft.config import MEFTConfig
from meft.errors import MEFTError
from meft.families import family_of
from meft.reversible import MEFTStack
from meft.strict_json import BadJSON, parse_json

CONFIG_FILE = "meft_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
#: The same tensors under the name transformers.Trainer loads a checkpoint's weights from
#: (NOTE [ Checkpoints the Trainer loads ], meft/peft_api.py).
TRAINER_WEIGHTS_FILE = "model.safetensors"
_REQUIRES_GRAD = "_meft_original_requires_grad"


def stacks(model: nn.Module) -> list[tuple[str, MEFTStack]]:
    """The (name, MEFTStack) pairs of a converted model, bottom-up (BART: encoder then decoder)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, MEFTStack)]


def is_converted(model: nn.Module) -> bool:
    return bool(stacks(model))


def hf_class(model: nn.Module) -> type:
    """The Hugging Face class the user has: ``model``'s own, or the one get_meft_model's ``MEFT<class>``
    subclasses (every class meft defines lives in a ``meft.`` module)."""
    return next(c for c in type(model).__mro__ if not c.__module__.startswith("meft."))


def config_of(model: nn.Module) -> MEFTConfig:
    found = stacks(model)
    if not found:
        raise MEFTError(
            f"model {type(model).__name__} is not converted to MEFT; call meft.convert(model, config) first"
        )
    return found[0][1].meft_config


def convert(model: nn.Module, config: MEFTConfig | None = None) -> nn.Module:
    """Make ``model`` reversible in place and return it.

    Every pre-trained weight (embeddings and BERT's pooler included) is frozen; the adapters and the
    task head (``classifier``, ``classification_head``, ``score``, ``qa_outputs``; never an LM head,
    which is tied to the embeddings or pre-trained) are trainable. ``num_rev_layers`` counts per
    layer stack (BART: the encoder and the decoder each). Raises MEFTError for an unsupported
    architecture, a model converted already, or ``num_rev_layers`` above the number of layers of a stack.
    """
    config = config or MEFTConfig()
    if not isinstance(config, MEFTConfig):
        raise MEFTError(f"config of type {type(config).__name__} is not a MEFTConfig; pass meft.MEFTConfig(...)")
    if is_converted(model):
        raise MEFTError(
            f"model {type(model).__name__} is converted to MEFT already; convert the original model, "
            "or call meft.unconvert(model) first"
        )
    family = family_of(model)
    sites = family.sites(model)
    if not sites:
        raise MEFTError(
            f"model {type(model).__name__} has no {family.name} layer stack to convert; "
            f"pass a model built by transformers' {family.name} classes"
        )
    for site in sites:
        depth = len(site.layers)
        if depth == 0:
            raise MEFTError(
                f"the {site.name} of {type(model).__name__} has no layers; MEFT makes a stack of layers reversible, "
                "so convert a model with at least one layer in each stack"
            )
        if config.num_rev_layers is not None and config.num_rev_layers > depth:
            raise MEFTError(
                f"num_rev_layers={config.num_rev_layers} exceeds the {depth} layers of the "
                f"{site.name} of {type(model).__name__}; pass num_rev_layers <= {depth}, or None for all"
            )

    original = {name: p.requires_grad for name, p in model.named_parameters()}
    hidden, activation = family.hidden_size(model.config), family.activation(model.config)
    built = []
    # Every stack is built before the model changes, so an adapter that cannot be allocated (an
    # absurd adapter_dim, e.g. from a hand-edited meft_config.json) leaves the model as it was.
    try:
        for site in sites:
            cache_top = bool(config.cache_top_layer)  # None (earlier versions' automatic) = False
            stack = MEFTStack(site.layers, site.kind, config, hidden, activation, name=site.name, cache_top=cache_top)
            stack.train(model.training)
            built.append(stack)
    except RuntimeError as exc:  # torch cannot allocate, or its size calculation overflows
        if isinstance(exc, torch.OutOfMemoryError):
            raise  # a device out of memory: the caller (memprof's engines) records that as such
        raise MEFTError(
            f"cannot build adapters of width adapter_dim={config.adapter_dim} for {type(model).__name__} "
            f"({_one_line(exc)[:200]}); pass an adapter_dim such as 8"
        ) from None
    model.requires_grad_(False)
    for site, stack in zip(sites, built):
        setattr(site.parent, site.attr, nn.ModuleList([stack]))
    for _, head in family.head_modules(model):
        head.requires_grad_(True)
    setattr(model, _REQUIRES_GRAD, original)
    return model


def unconvert(model: nn.Module) -> nn.Module:
    """Undo ``convert`` in place: original layer lists back, adapters dropped, requires_grad restored."""
    found = False
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ModuleList) and len(child) == 1 and isinstance(child[0], MEFTStack):
                setattr(module, name, child[0].base_layers)
                found = True
    if not found:
        raise MEFTError(f"model {type(model).__name__} is not converted to MEFT; nothing to undo")
    flags = getattr(model, _REQUIRES_GRAD, {})
    for name, p in model.named_parameters():
        p.requires_grad_(flags.get(name, p.requires_grad))
    if hasattr(model, _REQUIRES_GRAD):
        delattr(model, _REQUIRES_GRAD)
    return model


def trained_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """What MEFT trains: every adapter and the task head, by parameter name."""
    config_of(model)
    family = family_of(model)
    keep: set[int] = set()
    for _, stack in stacks(model):
        keep.update(id(p) for p in stack.adapters.parameters())
    for _, head in family.head_modules(model):
        keep.update(id(p) for p in head.parameters())
    return {name: p for name, p in model.named_parameters() if id(p) in keep}


# NOTE [ Saving and loading fail closed ]
# save_adapters checks the model and builds both files in memory before it touches the disk. It then
# writes each to a temporary file in the target folder (the same file system, so os.replace is atomic),
# removes an older CONFIG_FILE (and an older TRAINER_WEIGHTS_FILE when it writes none), replaces
# WEIGHTS_FILE (then TRAINER_WEIGHTS_FILE, if asked) and
# replaces CONFIG_FILE last: at every moment the folder holds the old pair, no CONFIG_FILE (which
# load_adapters refuses), or the new pair, never a mismatched pair. Whatever fails, no temporary file
# stays and the folders it created are removed.
# load_adapters reads and checks everything (the meta file, the MEFTConfig, every tensor's name, shape
# and dtype) and moves the tensors to the parameters' devices before it writes the first parameter, so a
# refused load leaves the model exactly as it was.
_META_KEYS = {"meft_config": dict, "model_class": str, "model_type": str}
_JSON_TYPES = {dict: "a JSON object", str: "a string"}
_RESAVE = "save the adapters again with meft.save_adapters"


def save_adapters(model: nn.Module, path: str | Path, *, trainer_weights: bool = False) -> Path:
    """Write the adapters and the task head (``adapter_model.safetensors``) and the MEFTConfig
    (``meft_config.json``) into the folder ``path``, created if missing; return the folder.
    ``trainer_weights=True`` also writes the same tensors as ``model.safetensors``, the file
    ``transformers.Trainer`` resumes and loads the best model from (``MEFTModel.save_pretrained``).

    Each file is replaced atomically (NOTE [ Saving and loading fail closed ]). Raises MEFTError, having
    written nothing, for a model that is not converted, a ``path`` that is a file, or a place it cannot
    write to.
    """
    from safetensors.torch import save

    config = config_of(model)
    tensors = {name: p.detach().contiguous().cpu() for name, p in trained_parameters(model).items()}
    meta = {
        "meft_config": config.to_dict(),
        "model_class": hf_class(model).__name__,
        "model_type": model.config.model_type,
    }
    weights = save(tensors)
    files = {WEIGHTS_FILE: weights, CONFIG_FILE: (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()}
    if trainer_weights:
        files[TRAINER_WEIGHTS_FILE] = weights
    order = [name for name in (WEIGHTS_FILE, TRAINER_WEIGHTS_FILE, CONFIG_FILE) if name in files]

    folder = Path(path)
    created = _make_folder(folder)
    staged: dict[str, Path] = {}
    touched = False
    try:
        for name, data in files.items():
            staged[name] = _stage(folder, name, data)
        (folder / CONFIG_FILE).unlink(missing_ok=True)
        if not trainer_weights:  # an earlier save_pretrained's copy would no longer match what is saved
            (folder / TRAINER_WEIGHTS_FILE).unlink(missing_ok=True)
        touched = True
        for name in order:
            os.replace(staged[name], folder / name)
            del staged[name]
    except BaseException as exc:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        if CONFIG_FILE in staged and WEIGHTS_FILE not in staged:  # new weights without their config: useless
            (folder / WEIGHTS_FILE).unlink(missing_ok=True)
            if trainer_weights:
                (folder / TRAINER_WEIGHTS_FILE).unlink(missing_ok=True)
        for made in reversed(created):
            with contextlib.suppress(OSError):
                made.rmdir()
        if not isinstance(exc, OSError):
            raise
        state = "it now holds no complete save" if touched else "nothing in it changed"
        raise MEFTError(
            f"cannot write the adapters into {str(folder)!r} ({_reason(exc)}); {state}: free space or "
            "fix the permissions and save again, or pass another folder"
        ) from None
    return folder


def load_adapters(model: nn.Module, path: str | Path) -> nn.Module:
    """Load what ``save_adapters`` wrote into a model converted with the same MEFTConfig; return the model.

    All or nothing (NOTE [ Saving and loading fail closed ]): raises MEFTError, with the model unchanged,
    for a missing or corrupt file, adapters of another MEFTConfig or model type, or tensors whose names,
    shapes or dtypes differ from the model's trained parameters.
    """
    current = config_of(model)
    folder = Path(path)
    saved, meta = _read_saved(folder)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if meta["model_type"] != model_type:
        raise MEFTError(
            f"adapters in {str(folder)!r} were saved from a {meta['model_type']!r} model "
            f"({meta['model_class']}), this is a {model_type!r} model ({type(model).__name__}); "
            f"load them into a {meta['model_class']}"
        )
    if saved != current:
        differ = [f.name for f in fields(MEFTConfig) if getattr(saved, f.name) != getattr(current, f.name)]
        was, now = (", ".join(f"{n}={getattr(cfg, n)!r}" for n in differ) for cfg in (saved, current))
        raise MEFTError(
            f"adapters in {str(folder)!r} were trained with {was}, the model is converted with {now}; "
            f"convert the model with the saved config (MEFTConfig.from_dict of the 'meft_config' in "
            f"{CONFIG_FILE})"
        )
    tensors = _read_weights(folder / WEIGHTS_FILE)
    params = trained_parameters(model)
    _check_tensors(folder / WEIGHTS_FILE, tensors, params, meta["model_class"])
    staged = {name: tensors[name].to(p.device) for name, p in params.items()}  # allocate before any write
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(staged[name])
    return model


def saved_config(path: str | Path) -> MEFTConfig:
    """The MEFTConfig of the adapters ``save_adapters`` wrote into the folder ``path``; MEFTError for a
    missing folder or file, or a config file that is not one."""
    return _read_saved(Path(path))[0]


def _read_saved(folder: Path) -> tuple[MEFTConfig, dict[str, Any]]:
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise MEFTError(f"adapter folder {str(folder)!r} {state}; pass a folder written by meft.save_adapters")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise MEFTError(
                f"{str(folder)!r} holds no {name}; pass a folder written by meft.save_adapters "
                f"(it holds {CONFIG_FILE} and {WEIGHTS_FILE})"
            )
    return _read_meta(folder / CONFIG_FILE)


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return those created, outermost first."""
    if folder.exists() and not folder.is_dir():
        raise MEFTError(
            f"{str(folder)!r} is a file, not a folder; pass a folder path (save_adapters writes "
            f"{WEIGHTS_FILE} and {CONFIG_FILE} into it)"
        )
    missing = []
    for p in (folder, *folder.parents):
        if p.exists():
            break
        missing.append(p)
    created: list[Path] = []
    try:
        for p in reversed(missing):
            p.mkdir()
            created.append(p)
    except OSError as exc:
        for p in reversed(created):
            with contextlib.suppress(OSError):
                p.rmdir()
        raise MEFTError(
            f"cannot create the folder {str(folder)!r} ({_reason(exc)}); pass a folder path you can write to"
        ) from None
    return created


def _stage(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to a new temporary file next to ``folder / name`` and flush it to disk."""
    tmp = folder / f".{name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666: the umask applies, as for open()
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _read_meta(file: Path) -> tuple[MEFTConfig, dict[str, Any]]:
    """The MEFTConfig and the meta dict of a CONFIG_FILE, every key and type checked."""
    try:
        meta = parse_json(file.read_bytes().decode("utf-8"), bounded_ints=True)
    except OSError as exc:
        raise MEFTError(f"cannot read {str(file)!r} ({_reason(exc)}); check its permissions") from None
    except UnicodeDecodeError as exc:
        raise MEFTError(f"{str(file)!r} is not UTF-8 text (byte {exc.start}); {_RESAVE}") from None
    except BadJSON as exc:  # NaN and Infinity pass: MEFTConfig refuses them naming the field
        raise MEFTError(f"{str(file)!r} {exc.why}; {_RESAVE}") from None
    if not isinstance(meta, dict):
        raise MEFTError(
            f"{str(file)!r} holds a JSON {type(meta).__name__}, not an object with {', '.join(_META_KEYS)}; {_RESAVE}"
        )
    for key, kind in _META_KEYS.items():
        if key not in meta:
            raise MEFTError(f"{str(file)!r} has no {key!r} (it needs {', '.join(_META_KEYS)}); {_RESAVE}")
        if not isinstance(meta[key], kind):
            raise MEFTError(f"{str(file)!r}: {key}={meta[key]!r} is not {_JSON_TYPES[kind]}; {_RESAVE}")
    # Every field, not defaults for missing ones: a default may not be what the adapters were trained with.
    absent = [f.name for f in fields(MEFTConfig) if f.name not in meta["meft_config"]]
    if absent:
        raise MEFTError(
            f"{str(file)!r}: meft_config lacks {', '.join(absent)}; add the value(s) the adapters were "
            f"trained with, or {_RESAVE}"
        )
    try:
        saved = MEFTConfig.from_dict(meta["meft_config"])
    except MEFTError as exc:
        raise MEFTError(f"{str(file)!r}: meft_config is invalid: {exc}") from None
    return saved, meta


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    try:
        data = file.read_bytes()
    except OSError as exc:
        raise MEFTError(f"cannot read {str(file)!r} ({_reason(exc)}); check its permissions") from None
    try:
        return load(data)
    except Exception as exc:  # noqa: BLE001 - SafetensorError for a bad header, or whatever else a malformed file trips
        raise MEFTError(
            f"{str(file)!r} is not a valid safetensors file ({_one_line(exc)}); it may be truncated "
            f"or corrupt: {_RESAVE}"
        ) from None


def _check_tensors(
    file: Path, tensors: dict[str, torch.Tensor], params: dict[str, nn.Parameter], model_class: str
) -> None:
    """MEFTError unless ``tensors`` has exactly the names of ``params``, with their shapes and dtypes."""
    missing, unexpected = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise MEFTError(
            f"{str(file)!r} does not match the model's trained parameters ({len(missing)} missing: "
            f"{_some(missing)}; {len(unexpected)} unexpected: {_some(unexpected)}); load it into a "
            f"{model_class} converted with the saved config"
        )
    shapes = [
        f"{n} {tuple(tensors[n].shape)} vs {tuple(p.shape)}" for n, p in params.items() if tensors[n].shape != p.shape
    ]
    if shapes:
        raise MEFTError(
            f"{str(file)!r} holds {len(shapes)} tensor(s) of another shape than the model's (saved vs "
            f"model: {_some(shapes)}); load it into a model of the same size (e.g. the same "
            "num_labels)"
        )
    cast = [n for n, p in params.items() if tensors[n].dtype != p.dtype]
    if cast:
        raise MEFTError(
            f"{str(file)!r} holds {len(cast)} tensor(s) of another dtype than the model's (saved vs "
            f"model: {_some([f'{n} {tensors[n].dtype} vs {params[n].dtype}' for n in cast])}); cast the "
            f"model to the saved dtype first, e.g. model.to({tensors[cast[0]].dtype})"
        )


def _some(items: list[str], limit: int = 3) -> str:
    """'a, b, c and 4 more', or 'none'."""
    shown = ", ".join(items[:limit]) or "none"
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _reason(exc: OSError) -> str:
    return exc.strerror or _one_line(exc)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
