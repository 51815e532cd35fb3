"""MEFTConfig: the one configuration of a MEFT conversion, validated on construction.

The per-variant constants (lam, beta, whether the streams swap, which stream carries the
pre-trained model's representation) follow docs/MEFT.md, "The three variants".
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from meft import fixed_point
from meft.errors import MEFTError
from meft.strict_json import BadJSON, parse_json


@dataclass(frozen=True)
class VariantSpec:
    """Constants of one variant. ``plm_stream`` indexes the stack's final (x1, x2), after the swap."""

    lam: float
    beta: float
    swap: bool
    plm_stream: int


# NOTE [ Which stream carries the PLM ]
# With (x1, x2) = (h0, h0) and adapters near zero at init:
#   meft1: y1 = 0.1 x1 + L(x2), y2 = x2 + A(y1) ~ x2; swap -> (x1, x2) = (~x2, ~L(x2)): x2 carries L.
#   meft2: y1 = x1 + A(x2) ~ x1, y2 = 0.1 x2 + L(y1);  swap -> (x1, x2) = (~L(x1), ~x1): x1 carries L.
#   meft3: y1 = 0.1 x1 + Attn(x2), y2 = 0.1 x2 + FFN(y1); no swap: x2 = ~FFN(Attn(x2)) carries L.
# In each case the other stream holds the previous layer's representation (meft1, meft2) or the
# attention block's output (meft3), so merge="mean" blends two depths while merge="plm" keeps one.
VARIANTS: dict[str, VariantSpec] = {
    "meft1": VariantSpec(lam=0.1, beta=1.0, swap=True, plm_stream=1),
    "meft2": VariantSpec(lam=1.0, beta=0.1, swap=True, plm_stream=0),
    "meft3": VariantSpec(lam=0.1, beta=0.1, swap=False, plm_stream=1),
}
MERGES = ("mean", "plm")
ARITHMETICS = ("exact", "float")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def _checked(
    name: str,
    value: Any,
    kind: type,
    constraint: str,
    fix: str,
    ok: Callable[[Any], bool] = lambda v: True,
    none: bool = False,
) -> Any:
    """``value`` as a plain ``kind`` (int, float or bool) if it is one (None too where ``none``) and passes
    ``ok``; else MEFTError. bool is no number here, though Python makes it an int; floats must be finite."""
    if value is None and none:
        return None
    if kind is bool:
        good = isinstance(value, bool)
    elif isinstance(value, bool):
        good = False
    elif kind is int:
        good = isinstance(value, numbers.Integral)
    else:  # float: any finite real number (ints and numpy scalars included)
        try:
            good = isinstance(value, numbers.Real) and math.isfinite(float(value))
        except OverflowError:  # an int too large for a float
            good = False
    if good:
        converted = kind(value)
        if ok(converted):
            return converted
    raise MEFTError(f"{name}={value!r} must be {constraint}; {fix}")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` lower-cased if it names one of ``choices`` (case-insensitive); else MEFTError."""
    if isinstance(value, str) and value.lower() in choices:
        return value.lower()
    raise MEFTError(f"{name} {value!r} is unknown; use one of {', '.join(choices)}, e.g. {name}={choices[0]!r}")


@dataclass
class MEFTConfig:
    """How to make a pre-trained model reversible (MEFT, Liao, Tan and Monz, NeurIPS 2023).

    Example::

        cfg = MEFTConfig(variant="meft3", adapter_dim=16)
        model = meft.convert(model, cfg)
    """

    variant: str = field(
        default="meft1",
        metadata=_help(
            "meft1: F = PLM layer, G = adapter; meft2: F = adapter, G = PLM layer; "
            "meft3: F = attention block, G = feed-forward block."
        ),
    )
    adapter_dim: int = field(default=8, metadata=_help("Bottleneck width r of every adapter (hidden -> r -> hidden)."))
    lam: float | None = field(
        default=None,
        metadata=_help(
            "Scale of x1 in y1 = lam * x1 + F(x2); None takes the variant's value (0.1, 1, 0.1). Must not be 0."
        ),
    )
    beta: float | None = field(
        default=None,
        metadata=_help(
            "Scale of x2 in y2 = beta * x2 + G(y1); None takes the variant's value (1, 0.1, 0.1). Must not be 0."
        ),
    )
    num_rev_layers: int | None = field(
        default=None,
        metadata=_help(
            "How many of the lowest layers of each layer stack use reversible backprop; None: all; "
            "0: the same architecture trained with ordinary backprop. Reconstruction error grows about "
            "tenfold per reversible layer (meft.reconstruction_error measures it)."
        ),
    )
    adapter_dropout: float = field(default=0.1, metadata=_help("Dropout probability inside every adapter."))
    init_std: float = field(default=0.02, metadata=_help("Std of the normal init of adapter weights (biases are 0)."))
    merge: str = field(
        default="plm",
        metadata=_help(
            "How the two streams become one hidden state after the last layer: 'mean' = (x1 + x2) / 2 as in "
            "the authors' BERT code, 'plm' = keep the stream that carries the PLM's representation."
        ),
    )
    cache_top_layer: bool | None = field(
        default=False,
        metadata=_help(
            "Keep the top layer's autograd graph instead of recomputing it in backward: saves one layer's "
            "recomputation, at a step peak that is higher, never lower, in every configuration measured "
            "(BENCHMARKS.md, 'The top layer's graph') and, for a stack with cross-attention (BART's decoder), a "
            "gradient of the encoder states summed in another order than ordinary backprop's (not bitwise). "
            "None, as files of earlier versions hold it, means False."
        ),
    )
    arithmetic: str = field(
        default="exact",
        metadata=_help(
            "'exact': streams in fixed point (int64 for float32 and float16 models, int32 for bfloat16), lam and beta "
            "rounded to multiples of 1/256 (0.1 -> 13/128), what each scaling drops kept per layer (4 bits per "
            "element for 13/128), so reversible gradients equal ordinary backprop at any "
            "depth and dtype; 'float': the paper's float arithmetic, whose inverse loses about 3.3 bits per layer."
        ),
    )

    def __post_init__(self) -> None:
        # NOTE [ Validating MEFTConfig ]: every field goes through _checked or _choice, so each wrong value (a string
        # where a number belongs, a bool where an int belongs, NaN, an unknown choice) fails here with
        # one line naming the field, the value, the constraint and the fix, and the stored values are
        # plain Python types that round-trip through JSON.
        self.variant = _choice("variant", self.variant, tuple(VARIANTS))
        self.adapter_dim = _checked(
            "adapter_dim", self.adapter_dim, int, "an integer >= 1", "pass e.g. adapter_dim=8", lambda v: v >= 1
        )
        for name in ("lam", "beta"):
            value = _checked(
                name,
                getattr(self, name),
                float,
                "None or a finite number",
                f"pass a float such as {name}=0.1, or None for the variant's default",
                none=True,
            )
            if value == 0:
                raise MEFTError(
                    f"{name}={getattr(self, name)!r} makes the layer impossible to invert (the inverse "
                    f"divides by {name}); pass a non-zero {name}, e.g. 0.1, or None for the variant's "
                    "default"
                )
            setattr(self, name, value)
        self.num_rev_layers = _checked(
            "num_rev_layers",
            self.num_rev_layers,
            int,
            "None (all layers) or an integer >= 0",
            "pass e.g. num_rev_layers=6, or 0 for ordinary backprop",
            lambda v: v >= 0,
            none=True,
        )
        self.adapter_dropout = _checked(
            "adapter_dropout",
            self.adapter_dropout,
            float,
            "a number in [0, 1)",
            "pass e.g. adapter_dropout=0.1",
            lambda v: 0.0 <= v < 1.0,
        )
        self.init_std = _checked(
            "init_std", self.init_std, float, "a finite number >= 0", "pass e.g. init_std=0.02", lambda v: v >= 0.0
        )
        self.merge = _choice("merge", self.merge, MERGES)
        self.cache_top_layer = _checked(
            "cache_top_layer",
            self.cache_top_layer,
            bool,
            "True, False or None (= False)",
            "pass e.g. cache_top_layer=False",
            none=True,
        )
        self.arithmetic = _choice("arithmetic", self.arithmetic, ARITHMETICS)
        if self.arithmetic == "exact":
            self.scales()  # raises for a lam or beta exact arithmetic cannot represent

    @property
    def spec(self) -> VariantSpec:
        return VARIANTS[self.variant]

    def scales(self) -> tuple[Any, Any]:
        """(lam, beta) as the arithmetic uses them: floats, or ``fixed_point.Dyadic`` in exact arithmetic."""
        lam = self.spec.lam if self.lam is None else self.lam
        beta = self.spec.beta if self.beta is None else self.beta
        if self.arithmetic == "exact":
            return fixed_point.dyadic("lam", lam), fixed_point.dyadic("beta", beta)
        return lam, beta

    @property
    def effective_lam(self) -> float:
        """The lam actually used (exact arithmetic: the dyadic rounding, 13/128 for 0.1)."""
        lam = self.scales()[0]
        return lam if isinstance(lam, float) else lam.value

    @property
    def effective_beta(self) -> float:
        beta = self.scales()[1]
        return beta if isinstance(beta, float) else beta.value

    def describe_scales(self) -> str:
        """``lam=13/128 (0.1015625), beta=1`` in exact arithmetic; ``lam=0.1, beta=1.0`` in float."""
        return ", ".join(
            f"{name}={s}" if isinstance(s, float) or s.k == 0 else f"{name}={s} ({s.value})"
            for name, s in zip(("lam", "beta"), self.scales())
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MEFTConfig:
        if not isinstance(data, dict):
            raise MEFTError(
                f"MEFTConfig data of type {type(data).__name__} is not a dict; pass MEFTConfig.to_dict() output"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MEFTError(
                f"MEFTConfig has no field(s) {', '.join(map(repr, unknown))}; use only {', '.join(sorted(known))}"
            )
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MEFTConfig:
        try:
            data = parse_json(text, bounded_ints=True)  # NOTE [ One strict JSON reader ]
        except BadJSON as exc:
            raise MEFTError(f"MEFTConfig JSON {exc.why}; pass the text written by MEFTConfig.to_json") from None
        if not isinstance(data, dict):
            raise MEFTError(
                f"MEFTConfig JSON must be an object, got {type(data).__name__}; pass MEFTConfig.to_json output"
            )
        return cls.from_dict(data)
