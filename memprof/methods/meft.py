"""MEFT (reversible memory-efficient fine-tuning, Liao et al., NeurIPS 2023) through the ``meft``
package: ``meft1``, ``meft2``, ``meft3``, and ``meft`` as an alias of ``meft1``.

Each converts the task model with ``meft.convert`` and the defaults of ``meft.MEFTConfig``
(adapters of width 8, every layer reversible, merge="plm"): PLM weights and embeddings frozen,
adapters and the task head trainable. Conversion works on the meta device.
"""

from memprof.methods import register

DESCRIPTIONS = {
    "meft1": "MEFT1: F = PLM layer (+ parallel FFN adapter), G = adapter; lam 0.1, beta 1; reversible",
    "meft2": "MEFT2: F = adapter, G = PLM layer (+ parallel FFN adapter); lam 1, beta 0.1; reversible",
    "meft3": "MEFT3: F = attention block (+ adapter), G = FFN block (+ parallel adapter); lam = beta = 0.1",
}


def _apply(variant: str):
    def apply(model, backbone, task):
        import meft

        return meft.convert(model, meft.MEFTConfig(variant=variant))

    apply.__name__ = f"apply_{variant}"
    return apply


for _variant, _description in DESCRIPTIONS.items():
    register(_variant, _description)(_apply(_variant))
register("meft", "alias of meft1")(_apply("meft1"))
