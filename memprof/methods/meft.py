"""MEFT (reversible memory-efficient fine-tuning, Liao et al., NeurIPS 2023) through the ``meft``
package: ``meft1``, ``meft2``, ``meft3`` in meft's default exact arithmetic, ``meft`` as an alias of
``meft1``, and ``meft1-float``, ``meft2-float``, ``meft3-float`` in the paper's float arithmetic.

Each converts the task model with ``meft.convert`` and the defaults of ``meft.MEFTConfig``
(adapters of width 8, merge="plm", every layer reversible), only ``arithmetic`` set: PLM weights and
embeddings frozen, adapters and the task head trainable. Conversion works on the meta device.

Exact arithmetic carries both streams in fixed point (int64 for float32 and float16 models, int32
for bfloat16 ones) and keeps, per reversible layer, what each scaling by lam or beta drops: 4 bits per
element of each scaled stream for 13/128, packed (saved-activation category ``reversible_bits``).
lam = 0.1 becomes 13/128. Float arithmetic keeps nothing per layer
but its inverse loses about 3.3 bits per layer; the ``-float`` methods show what exactness costs.

Each method's settings are its ``meft.MEFTConfig``; the scales in its description come from it
(``MEFTConfig.describe_scales``), so they are meft's own numbers, written nowhere here.
"""

from dataclasses import replace

from meft.config import MEFTConfig
from memprof.methods.registry import register

#: variant -> what F and G are, in words
VARIANTS = {
    "meft1": "F = PLM layer (+ parallel FFN adapter), G = adapter",
    "meft2": "F = adapter, G = PLM layer (+ parallel FFN adapter)",
    "meft3": "F = attention block (+ adapter), G = FFN block (+ parallel adapter)",
}


#: which parameters MEFT leaves trainable (meft.convert: PLM weights and embeddings frozen)
TRAINS = "MEFT adapters and the task head"


def _apply(config: MEFTConfig):
    def apply(model, backbone, task):
        import meft

        # a fresh copy per model: meft.convert keeps the config it is given on the model
        return meft.convert(model, replace(config))

    apply.__name__ = f"apply_{config.variant}_{config.arithmetic}"
    return apply


def description(config: MEFTConfig) -> str:
    how = {"exact": "fixed-point streams, dropped bits kept", "float": "the paper's, nothing kept"}[config.arithmetic]
    return (
        f"{config.variant.upper()}: {VARIANTS[config.variant]}; {config.arithmetic} arithmetic ({how}), "
        f"{config.describe_scales()}"
    )


def register_meft(name: str, config: MEFTConfig, alias_of: str | None = None) -> None:
    """Register method ``name``: ``meft.convert`` with ``config`` (how benchmarks add other settings)."""
    said = f"alias of {alias_of} ({config.arithmetic} arithmetic)" if alias_of else description(config)
    register(name, said, alias_of=alias_of, trains=TRAINS, settings=config, layers_alike=True)(_apply(config))


# The order users see: the exact variants, the alias, then the float ones.
for _variant in VARIANTS:
    register_meft(_variant, MEFTConfig(variant=_variant, arithmetic="exact"))
register_meft("meft", MEFTConfig(variant="meft1", arithmetic="exact"), alias_of="meft1")
for _variant in VARIANTS:
    register_meft(f"{_variant}-float", MEFTConfig(variant=_variant, arithmetic="float"))
