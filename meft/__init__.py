"""MEFT: memory-efficient fine-tuning by making a pre-trained model reversible.

Liao, Tan and Monz, "Make Pre-trained Model Reversible: From Parameter to Memory Efficient
Fine-Tuning", NeurIPS 2023 (arXiv 2306.00477). docs/MEFT.md describes the method as implemented
here: the equations, the three variants, the exact arithmetic this implementation adds, the defaults.

    import meft
    model = meft.convert(model, meft.MEFTConfig(variant="meft1"))
    ...train...
    meft.save_adapters(model, "out/")
"""

from meft.config import VARIANTS, MEFTConfig
from meft.convert import config_of, convert, is_converted, load_adapters, save_adapters, trained_parameters, unconvert
from meft.diagnostics import (
    GradientFidelity,
    LayerFidelity,
    LayerReconstruction,
    ParameterFidelity,
    gradient_fidelity,
    reconstruction_error,
    starting_point_similarity,
)
from meft.errors import MEFTError
from meft.families import supported_model_types
from meft.peft_api import MEFTModel, get_meft_model
from meft.version import __version__

SUPPORTED = supported_model_types()

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
