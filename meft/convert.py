"""Converting a Hugging Face model to MEFT and back, and saving only what was trained.

``convert`` replaces each layer stack's ``nn.ModuleList`` by a one-element list holding a
``MEFTStack``, which keeps the original layers inside (wrap, don't patch): the family's own forward
(embeddings, masks, final LayerNorm, heads) runs unchanged and its layer loop calls the whole
reversible stack once. ``unconvert`` puts the original lists back.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from meft.config import MEFTConfig
from meft.errors import MEFTError
from meft.families import family_of
from meft.reversible import MEFTStack

CONFIG_FILE = "meft_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_REQUIRES_GRAD = "_meft_original_requires_grad"


def stacks(model: nn.Module) -> list[tuple[str, MEFTStack]]:
    """The (name, MEFTStack) pairs of a converted model, bottom-up (BART: encoder then decoder)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, MEFTStack)]


def is_converted(model: nn.Module) -> bool:
    return bool(stacks(model))


def config_of(model: nn.Module) -> MEFTConfig:
    found = stacks(model)
    if not found:
        raise MEFTError(f"model {type(model).__name__} is not converted to MEFT; "
                        "call meft.convert(model, config) first")
    return found[0][1].meft_config


def convert(model: nn.Module, config: MEFTConfig | None = None) -> nn.Module:
    """Make ``model`` reversible in place and return it.

    Every pre-trained weight (embeddings and BERT's pooler included) is frozen; the adapters and the
    task head (``classifier``, ``classification_head``, ``score``, ``qa_outputs``; never an LM head,
    which is tied to the embeddings or pre-trained) are trainable. ``num_rev_layers`` counts per
    layer stack (BART: the encoder and the decoder each). Raises MEFTError for an unsupported architecture, a model converted already, or
    ``num_rev_layers`` above the number of layers of a stack.
    """
    config = config or MEFTConfig()
    if not isinstance(config, MEFTConfig):
        raise MEFTError(f"config of type {type(config).__name__} is not a MEFTConfig; pass meft.MEFTConfig(...)")
    if is_converted(model):
        raise MEFTError(f"model {type(model).__name__} is converted to MEFT already; convert the original model, "
                        "or call meft.unconvert(model) first")
    family = family_of(model)
    sites = family.sites(model)
    if not sites:
        raise MEFTError(f"model {type(model).__name__} has no {family.name} layer stack to convert; "
                        f"pass a model built by transformers' {family.name} classes")
    for site in sites:
        depth = len(site.layers)
        if config.num_rev_layers is not None and config.num_rev_layers > depth:
            raise MEFTError(f"num_rev_layers={config.num_rev_layers} exceeds the {depth} layers of the "
                            f"{site.name} of {type(model).__name__}; pass num_rev_layers <= {depth}, or None for all")

    original = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(False)
    hidden, activation = family.hidden_size(model.config), family.activation(model.config)
    small_head = bool(family.head_modules(model))
    for i, site in enumerate(sites):
        cache_top = config.cache_top_layer
        if cache_top is None:  # free only where the stack's output feeds a small head (MEFTConfig.cache_top_layer),
            # and not for meft3, which recomputes its attention and feed-forward blocks one at a time
            cache_top = small_head and i == len(sites) - 1 and config.variant != "meft3"
        stack = MEFTStack(site.layers, site.kind, config, hidden, activation, name=site.name, cache_top=cache_top)
        stack.train(model.training)
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


def save_adapters(model: nn.Module, path: str | Path) -> Path:
    """Write the adapters and the task head (``adapter_model.safetensors``) and the MEFTConfig
    (``meft_config.json``) into the folder ``path``; return the folder."""
    from safetensors.torch import save_file

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: p.detach().contiguous().cpu() for name, p in trained_parameters(model).items()}
    save_file(tensors, str(folder / WEIGHTS_FILE))
    meta = {"meft_config": config_of(model).to_dict(), "model_class": type(model).__name__,
            "model_type": model.config.model_type}
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return folder


def load_adapters(model: nn.Module, path: str | Path) -> nn.Module:
    """Load what ``save_adapters`` wrote into a model converted with the same MEFTConfig."""
    from safetensors.torch import load_file

    folder = Path(path)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise MEFTError(f"{str(folder)!r} holds no {CONFIG_FILE} and {WEIGHTS_FILE}; pass a folder written by "
                        "meft.save_adapters")
    meta = json.loads((folder / CONFIG_FILE).read_text())
    saved = MEFTConfig.from_dict(meta["meft_config"])
    current = config_of(model)
    if saved != current:
        raise MEFTError(f"adapters in {str(folder)!r} were trained with {saved}, the model is converted with "
                        f"{current}; convert the model with the saved config (MEFTConfig.from_dict)")
    tensors = load_file(str(folder / WEIGHTS_FILE))
    params = trained_parameters(model)
    missing, unexpected = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise MEFTError(f"adapter weights do not match the model (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]}); load them into a {meta['model_class']}")
    with torch.no_grad():
        for name, p in params.items():
            if p.shape != tensors[name].shape:
                raise MEFTError(f"saved {name} has shape {tuple(tensors[name].shape)}, the model's is "
                                f"{tuple(p.shape)}; load into a model of the same size")
            p.copy_(tensors[name])
    return model
