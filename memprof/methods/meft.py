"""MEFT (reversible memory-efficient fine-tuning, Liao et al., NeurIPS 2023) through the ``meft``
package: ``meft1``, ``meft2``, ``meft3`` in meft's default exact arithmetic, ``meft`` as an alias of
``meft1``, and ``meft1-float``, ``meft2-float``, ``meft3-float`` in the paper's float arithmetic.

Each converts the task model with ``meft.convert`` and the defaults of ``meft.MEFTConfig``
(adapters of width 8, merge="plm", every layer reversible except, under a classification head, the
top one, whose graph meft keeps: ``cache_top_layer``), only ``arithmetic`` set: PLM weights and
embeddings frozen, adapters and the task head trainable. Conversion works on the meta device.

Exact arithmetic carries both streams in fixed point (int64 for float32 and float16 models, int32
for bfloat16 ones) and keeps, per reversible layer, what each scaling by lam or beta drops: 4 bits per
element of each scaled stream for 13/128, packed (saved-activation category ``reversible_bits``).
lam = 0.1 becomes 13/128. Float arithmetic keeps nothing per layer
but its inverse loses about 3.3 bits per layer; the ``-float`` methods show what exactness costs.
"""

from memprof.methods.registry import register

#: variant -> (F and G, its scales in exact arithmetic, in float arithmetic), as meft.MEFTConfig has them
VARIANTS = {
    "meft1": ("F = PLM layer (+ parallel FFN adapter), G = adapter", "lam 13/128 (for 0.1), beta 1",
              "lam 0.1, beta 1"),
    "meft2": ("F = adapter, G = PLM layer (+ parallel FFN adapter)", "lam 1, beta 13/128 (for 0.1)",
              "lam 1, beta 0.1"),
    "meft3": ("F = attention block (+ adapter), G = FFN block (+ parallel adapter)",
              "lam = beta = 13/128 (for 0.1)", "lam = beta = 0.1"),
}


#: which parameters MEFT leaves trainable (meft.convert: PLM weights and embeddings frozen)
TRAINS = "MEFT adapters and the task head"


def _apply(variant: str, arithmetic: str):
    def apply(model, backbone, task):
        import meft

        return meft.convert(model, meft.MEFTConfig(variant=variant, arithmetic=arithmetic))

    apply.__name__ = f"apply_{variant}_{arithmetic}"
    return apply


def description(variant: str, arithmetic: str) -> str:
    nets, exact_scales, float_scales = VARIANTS[variant]
    if arithmetic == "exact":
        return f"{variant.upper()}: {nets}; exact arithmetic (fixed-point streams, dropped bits kept), {exact_scales}"
    return f"{variant.upper()}: {nets}; float arithmetic (the paper's, nothing kept), {float_scales}"


# The order users see: the exact variants, the alias, then the float ones.
for _variant in VARIANTS:
    register(_variant, description(_variant, "exact"), trains=TRAINS)(_apply(_variant, "exact"))
register("meft", "alias of meft1 (exact arithmetic)", alias_of="meft1", trains=TRAINS)(_apply("meft1", "exact"))
for _variant in VARIANTS:
    register(f"{_variant}-float", description(_variant, "float"), trains=TRAINS)(_apply(_variant, "float"))
