"""The peft-style face of MEFT: ``get_meft_model``, ``MEFTModel.save_pretrained`` / ``from_pretrained``
and ``print_trainable_parameters``, beside ``convert``, ``save_adapters`` and ``load_adapters``.

    model = meft.get_meft_model(hf_model, meft.MEFTConfig(variant="meft1"))
    model.print_trainable_parameters()
    ...train (a transformers.Trainer saves, resumes and loads the best checkpoint through it)...
    model.save_pretrained("out/")     # adapter_model.safetensors + model.safetensors + meft_config.json
    model = meft.MEFTModel.from_pretrained(fresh_hf_model, "out/")

The files are those of ``save_adapters`` (one format, readable by both APIs): the trained weights in
``adapter_model.safetensors``, peft's weights file name, and the config in ``meft_config.json``.
Not ``adapter_config.json``: transformers and peft take a folder holding that file for a peft
adapter and would try to load it as one, which a MEFT folder is not. ``save_pretrained`` adds a
copy of the weights as ``model.safetensors`` for the Trainer (NOTE [ Checkpoints the Trainer loads ]).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from meft.config import MEFTConfig
from meft.convert import (
    config_of,
    convert,
    hf_class,
    load_adapters,
    save_adapters,
    saved_config,
    trained_parameters,
    unconvert,
)

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

# NOTE [ Checkpoints the Trainer loads ]
# transformers.Trainer (5.x, ``_load_from_checkpoint`` and ``_load_best_model``) loads a checkpoint
# it saved in one of two ways: a peft PeftModel through its ``load_adapter`` (the Trainer asks
# ``isinstance(model, PeftModel)``, which a MEFT model is not and cannot honestly be), and any other
# model by reading ``model.safetensors`` and calling ``model.load_state_dict(weights, strict=False)``.
# So ``save_pretrained`` writes the trained tensors a second time, under that name and under the
# model's own parameter names, beside MEFT's ``adapter_model.safetensors`` (twice the adapters'
# bytes, never a frozen weight): ``resume_from_checkpoint`` and ``load_best_model_at_end`` then
# work with the plain Trainer, which restores the optimizer, scheduler, RNG and trainer state from
# its own files. The keys the file lacks are exactly the frozen ones, which the model holds already;
# ``_keys_to_ignore_on_save`` names them, so the Trainer's check after loading (missing keys equal to
# the keys a save leaves out) passes without a warning listing every backbone weight, and a
# checkpoint that lacks anything else still warns.


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
        ``save_directory``: ``save_adapters``, atomically, one file at a time, with the weights also
        as ``model.safetensors``, which ``transformers.Trainer`` loads when it resumes from a
        checkpoint or loads the best one (NOTE [ Checkpoints the Trainer loads ]).

        ``is_main_process=False`` writes nothing (the Trainer's other ranks). ``state_dict`` and
        ``safe_serialization`` are accepted because Trainer passes them; the weights are always read
        from the model's trained parameters and written as safetensors.
        """
        if is_main_process:
            save_adapters(self, save_directory, trainer_weights=True)

    @property
    def _keys_to_ignore_on_save(self) -> set[str]:
        """The frozen weights ``save_pretrained`` leaves out (NOTE [ Checkpoints the Trainer loads ]),
        with whatever the original class left out of its own saves."""
        trained = trained_parameters(self)
        own = self.__dict__.get("_keys_to_ignore_on_save") or set()
        return set(own) | {k for k in self.state_dict() if k not in trained}

    @_keys_to_ignore_on_save.setter
    def _keys_to_ignore_on_save(self, value) -> None:
        self.__dict__["_keys_to_ignore_on_save"] = value

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
        base = hf_class(self)
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
