"""The peft-style face of MEFT: ``get_meft_model``, ``MEFTModel.save_pretrained`` / ``from_pretrained``
and ``print_trainable_parameters``, beside ``convert``, ``save_adapters`` and ``load_adapters``.

    model = meft.get_meft_model(hf_model, meft.MEFTConfig(variant="meft1"))
    model.print_trainable_parameters()
    ...train (a transformers.Trainer saves its checkpoints through model.save_pretrained)...
    model.save_pretrained("out/")                     # adapter_model.safetensors + meft_config.json
    model = meft.MEFTModel.from_pretrained(fresh_hf_model, "out/")

The files are those of ``save_adapters`` (one format, readable by both APIs): the trained weights in
``adapter_model.safetensors``, peft's weights file name, and the config in ``meft_config.json``.
Not ``adapter_config.json``: transformers and peft take a folder holding that file for a peft
adapter and would try to load it as one, which a MEFT folder is not.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from meft.config import MEFTConfig
from meft.convert import config_of, convert, load_adapters, save_adapters, saved_config, unconvert

# NOTE [ A MEFT model is its own Hugging Face class ]
# transformers.Trainer saves a checkpoint by calling ``save_pretrained`` only on a PreTrainedModel (or
# a peft PeftModel); any other module it saves as a full state dict in ``model.safetensors``. A
# wrapper around the converted model (peft's shape) would therefore be saved whole, frozen weights
# included. So ``get_meft_model`` keeps the converted model and gives it a subclass of its own class,
# ``MEFT<Class>``, whose MRO puts ``MEFTModel`` first: it is still the same object, the same
# PreTrainedModel with the same forward, config and generate, and only ``save_pretrained``,
# ``from_pretrained`` and the helpers below are MEFT's. The layers themselves stay wrapped, not
# patched (``convert``), and ``unload`` gives the original class and layers back.
_CLASSES: dict[type, type] = {}


class MEFTModel:
    """A Hugging Face model converted to MEFT, with peft's verbs (NOTE [ A MEFT model is its own
    Hugging Face class ]). Made by ``get_meft_model`` or ``MEFTModel.from_pretrained``, never directly;
    ``isinstance(model, meft.MEFTModel)`` tells a model made that way."""

    @property
    def meft_config(self) -> MEFTConfig:
        return config_of(self)

    def save_pretrained(
        self, save_directory: str | Path, is_main_process: bool = True, state_dict=None, safe_serialization: bool = True
    ) -> None:
        """Write only the trained weights (adapters and task head) and the MEFTConfig into
        ``save_directory``: ``save_adapters``, atomically, one file at a time.

        ``is_main_process=False`` writes nothing (the Trainer's other ranks). ``state_dict`` and
        ``safe_serialization`` are accepted because Trainer passes them; the weights are always read
        from the model's trained parameters and written as safetensors.
        """
        if is_main_process:
            save_adapters(self, save_directory)

    @classmethod
    def from_pretrained(cls, model: nn.Module, model_id: str | Path, is_trainable: bool = False) -> MEFTModel:
        """Convert ``model`` (a fresh Hugging Face model of the saved type) with the MEFTConfig saved in
        the folder ``model_id``, load the saved weights and return it as a MEFT model.

        As in peft, the result is for inference unless ``is_trainable=True``: nothing requires grad.
        All or nothing: raises MEFTError, with ``model`` left unconverted, for a folder that is not a
        MEFT save or weights that do not fit the model (``load_adapters``).
        """
        get_meft_model(model, saved_config(model_id))
        try:
            load_adapters(model, model_id)
        except BaseException:
            model.unload()
            raise
        if not is_trainable:
            model.requires_grad_(False)
        return model

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable, all) parameter counts, each tied parameter once."""
        return count_parameters(self)

    def print_trainable_parameters(self) -> None:
        """Print peft's line: ``trainable params: N || all params: M || trainable%: P``."""
        trainable, total = self.get_nb_trainable_parameters()
        print(
            f"trainable params: {trainable:,d} || all params: {total:,d} || "
            f"trainable%: {100 * trainable / max(total, 1):.4f}"
        )

    def unload(self) -> nn.Module:
        """Undo ``get_meft_model`` in place: the original class, layers and requires_grad flags back."""
        base = next(c for c in type(self).__mro__[1:] if c is not MEFTModel and not issubclass(c, MEFTModel))
        unconvert(self)
        self.__class__ = base
        return self


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts of any model, each shared (tied) parameter once
    (``Module.parameters`` yields a shared one once). memprof counts with this too."""
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def get_meft_model(model: nn.Module, config: MEFTConfig | None = None) -> MEFTModel:
    """Convert ``model`` to MEFT in place (``convert``) and return it as a ``MEFTModel``, peft's
    ``get_peft_model`` for MEFT. Raises MEFTError as ``convert`` does, leaving ``model`` as it was."""
    convert(model, config)
    model.__class__ = _meft_class(type(model))
    return model


def _meft_class(base: type) -> type:
    """``MEFT<base>``: MEFTModel's methods first, then everything of ``base`` (one class per base)."""
    if issubclass(base, MEFTModel):  # a MEFT model that meft.unconvert undid, converted again
        return base
    if base not in _CLASSES:
        _CLASSES[base] = type(
            f"MEFT{base.__name__}", (MEFTModel, base), {"__module__": __name__, "__doc__": MEFTModel.__doc__}
        )
    return _CLASSES[base]
