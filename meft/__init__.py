"""MEFT: memory-efficient fine-tuning by making a pre-trained model reversible.

Liao, Tan and Monz, "Make Pre-trained Model Reversible: From Parameter to Memory Efficient
Fine-Tuning", NeurIPS 2023 (arXiv 2306.00477). docs/MEFT.md describes the method as implemented
here: the equations, the three variants, the exact arithmetic this implementation adds, the defaults.

    import meft
    model = meft.convert(model, meft.MEFTConfig(variant="meft1"))
    ...train...
    meft.save_adapters(model, "out/")
"""

import sys
import types

# Names are imported on first use (PEP 562): ``meft.strict_json`` and ``meft.version`` serve readers
# of result files (memprof's reporters) that must not pay for importing torch and transformers.
_WHERE = {
    "VARIANTS": "meft.config",
    "MEFTConfig": "meft.config",
    "config_of": "meft.convert",
    "convert": "meft.convert",
    "is_converted": "meft.convert",
    "load_adapters": "meft.convert",
    "save_adapters": "meft.convert",
    "trained_parameters": "meft.convert",
    "unconvert": "meft.convert",
    "GradientFidelity": "meft.diagnostics",
    "LayerFidelity": "meft.diagnostics",
    "LayerReconstruction": "meft.diagnostics",
    "ParameterFidelity": "meft.diagnostics",
    "gradient_fidelity": "meft.diagnostics",
    "reconstruction_error": "meft.diagnostics",
    "starting_point_similarity": "meft.diagnostics",
    "MEFTError": "meft.errors",
    "MEFTModel": "meft.peft_api",
    "get_meft_model": "meft.peft_api",
    "__version__": "meft.version",
}


def __getattr__(name: str):
    import importlib

    if name == "SUPPORTED":
        from meft.families import supported_model_types

        value = supported_model_types()
    elif name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
    else:
        raise AttributeError(f"module 'meft' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """Importing a submodule binds it on its package; ``meft.convert`` must stay the function after
    ``meft/convert.py`` is imported (by name, ``from meft.convert import ...``, or lazily above)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _WHERE and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "MEFTConfig",
    "MEFTError",
    "MEFTModel",
    "SUPPORTED",
    "VARIANTS",
    "GradientFidelity",
    "LayerFidelity",
    "LayerReconstruction",
    "ParameterFidelity",
    "config_of",
    "convert",
    "get_meft_model",
    "gradient_fidelity",
    "is_converted",
    "load_adapters",
    "reconstruction_error",
    "save_adapters",
    "starting_point_similarity",
    "trained_parameters",
    "unconvert",
    "__version__",
]
