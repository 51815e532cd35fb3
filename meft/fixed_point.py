"""Fixed-point streams for exact reversible arithmetic (MacKay et al., "Reversible Recurrent Neural
Networks", NeurIPS 2018), as MEFT's ``arithmetic="exact"`` uses them.

A stream value x is held as the integer X = round(x * 2^fraction) of a ``Format`` chosen by the
model's dtype (``format_for``). Integer addition and subtraction are exact, and a scale lam = m / 2^k
(a ``Dyadic``) is applied as Y = floor(X * m / 2^k), keeping what the division drops so that X comes
back exactly (NOTE [ Kept bits ]).

NOTE [ Formats ]
A format needs enough fraction bits for the model's own precision and enough integer bits for the
family's range; nothing wider, since the streams and backward's integer temporaries count against
the method's memory.
  * float32, float64 and float16 models: int64, 32 fraction bits, |x| < 2^22 (about 4.2 million;
    float16 streams are further held to 65504, what they decode to). float32 carries 24 significant
    bits and float16 11, so 2^-32 is far below their rounding of any value that matters. (float16
    in int32 would need 2^-18 steps for the small residual streams of pre-LayerNorm decoders, whose
    values are around 0.02, and then could not hold float16's range.)
  * bfloat16 models: int32, 16 fraction bits, |x| < 2^14 = 16384 (the largest hidden values of
    bfloat16 models, OPT's and Llama's outliers included, are in the thousands). bfloat16 carries 8
    significant bits: its rounding error is about 2^-9 of a value, so a fixed step of 2^-16 (rounding
    error 2^-16 / sqrt(12) = 4.4e-6) adds a few percent of bfloat16's own error even on a stream of
    RMS 0.02, and nothing measurable on larger ones (measured against float arithmetic in
    docs/MEFT.md).
Both stream and F/G outputs stay below 2^(bits - 2), so that y = lam * x + F(x2) cannot wrap.

NOTE [ Kept bits ]
X * m = Y * 2^k + r with 0 <= r < 2^k. Given Y, r is one of the values congruent to -Y * 2^k modulo
m, so only j = r // m needs keeping: (2^k - 1) // m + 1 values, ``Dyadic.kept_bits`` bits (4 for
13/128, against the 7 bits of r: log2(128/13) = 3.3 is the information the scaling destroys). Indices
of at most 4 bits are packed two a byte along the hidden dimension (13/128: half a byte per element;
1/8's 3 bits take 4 as well), wider ones a byte each. ``scale`` never forms X * m, which could
overflow: X = q * 2^k + (X mod 2^k), so Y = q * m + floor((X mod 2^k) * m / 2^k), the second term
and j both read from tables indexed by X mod 2^k. ``unscale_`` rebuilds X * m = Y * 2^k + r and
divides by m exactly by multiplying with m's inverse modulo 2^bits (m odd): the true X fits, so the
wrapped products give it bit for bit.

Range checks: F and G outputs and the new streams are checked against the format's bound (a
non-finite output fails the check); checks are skipped on fake and meta tensors, which have no values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch._subclasses.fake_tensor import is_fake

from meft.errors import MEFTError

#: Largest number of low bits one scaling may discard (lam and beta are multiples of 2^-MAX_SHIFT).
MAX_SHIFT = 8


@dataclass(frozen=True)
class Format:
    """x is held as the integer round(x * 2^fraction) of ``dtype``, with |x| < 2^range_bits."""

    dtype: torch.dtype
    fraction: int
    range_bits: int

    @property
    def one(self) -> float:
        return float(2**self.fraction)

    @property
    def limit(self) -> float:
        """The largest magnitude a stream or an F/G output may reach, in real units (exclusive)."""
        return float(2**self.range_bits)

    @property
    def bits(self) -> int:
        return torch.iinfo(self.dtype).bits

    def __str__(self) -> str:
        return f"{str(self.dtype).removeprefix('torch.')}, {self.fraction} fraction bits, range 2^{self.range_bits}"


WIDE = Format(torch.int64, 32, 22)
NARROW = Format(torch.int32, 16, 14)
_BY_INT = {WIDE.dtype: WIDE, NARROW.dtype: NARROW}


def format_for(dtype: torch.dtype) -> Format:
    """The format of streams that decode to ``dtype`` (NOTE [ Formats ])."""
    return NARROW if dtype == torch.bfloat16 else WIDE


def format_of(raw: torch.Tensor) -> Format:
    """The format of a raw integer stream, from its dtype."""
    return _BY_INT[raw.dtype]


@dataclass(frozen=True)
class Dyadic:
    """The rational ``m / 2^k`` in lowest terms (m odd unless k = 0)."""

    m: int
    k: int

    @property
    def value(self) -> float:
        return self.m / 2**self.k

    @property
    def is_one(self) -> bool:
        return self.k == 0 and self.m == 1

    @property
    def kept_bits(self) -> int:
        """Bits kept per element by a scaling (NOTE [ Kept bits ]): 4 for 13/128, 3 for 1/8, 0 for +-1."""
        return 0 if self.k == 0 else ((2**self.k - 1) // abs(self.m)).bit_length()

    def __str__(self) -> str:
        return str(self.m) if self.k == 0 else f"{self.m}/{2**self.k}"


def dyadic(name: str, value: float) -> Dyadic:
    """``value`` rounded to the nearest multiple of 2^-MAX_SHIFT, in lowest terms.

    0.1 becomes 26/256 = 13/128 = 0.1015625 (4 kept bits per element); 1 stays 1 (nothing kept).
    Raises MEFTError for a value that rounds to 0 (it needs more than MAX_SHIFT discarded bits)
    or whose numerator would be too large for the range (|value| > 1).
    """
    if not math.isfinite(value) or value == 0:
        raise MEFTError(f"{name}={value!r} cannot scale a reversible stream; pass a finite non-zero {name} such as 0.1")
    if abs(value) > 1:
        raise MEFTError(
            f"{name}={value!r} is outside [-1, 1], where exact arithmetic keeps its range; "
            f"pass |{name}| <= 1, or arithmetic='float'"
        )
    m, k = round(value * 2**MAX_SHIFT), MAX_SHIFT
    if m == 0:
        raise MEFTError(
            f"{name}={value!r} needs more than {MAX_SHIFT} discarded bits per element (exact arithmetic "
            f"uses multiples of 1/{2**MAX_SHIFT}); pass |{name}| >= {1 / 2**MAX_SHIFT}, "
            "or arithmetic='float'"
        )
    while k > 0 and m % 2 == 0:
        m, k = m // 2, k - 1
    return Dyadic(m, k)


def encode(x: torch.Tensor, fmt: Format) -> torch.Tensor:
    """Float tensor -> fixed point, rounded to the nearest multiple of 2^-fraction (ties to even:
    deterministic and unbiased; truncation's bias toward zero adds up over deep stacks).

    Scaling by 2^fraction is exact in float32, bfloat16 and float64 (a power of two within their
    exponent range); float16's range is too small, so it goes through float32.
    """
    if x.dtype == torch.float16:
        x = x.float()
    return (x * fmt.one).round_().to(fmt.dtype)


def decode(raw: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Fixed point -> float tensor of ``dtype``: converted to float32 (float64 for float64) and scaled
    by the exact power of two 2^-fraction, then rounded once more for 16-bit dtypes."""
    y = raw.to(torch.float64 if dtype == torch.float64 else torch.float32).mul_(1 / format_of(raw).one)
    return y if y.dtype == dtype else y.to(dtype)


def scale(x: torch.Tensor, d: Dyadic) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(floor(x * m / 2^k), the packed indices that restore x; NOTE [ Kept bits ]), or (x, None) for 1.

    ``x`` is left as it was; the result is a new tensor unless d is 1. Both what the low k bits of x
    add to the result and the index they leave are functions of those k bits alone, so they are
    read from two tables of 2^k entries (no product that could overflow, no integer division).
    """
    if d.is_one:
        return x, None
    if d.k == 0:  # m = -1
        return x * d.m, None
    low = x & (2**d.k - 1)  # x mod 2^k: the tables' index
    tm = torch.arange(2**d.k, dtype=torch.int64, device=x.device) * d.m
    carry = (tm >> d.k).to(x.dtype)  # floor((x mod 2^k) * m / 2^k)
    index = torch.div(tm & (2**d.k - 1), abs(d.m), rounding_mode="floor").to(torch.uint8)  # r // |m|
    y = (x >> d.k).mul_(d.m).add_(_lookup(carry, low))
    return y, pack(_lookup(index, low), d.kept_bits)


def unscale_(y: torch.Tensor, kept: torch.Tensor | None, d: Dyadic) -> torch.Tensor:
    """The x that ``scale`` turned into (y, kept), computed in ``y``'s memory (exact)."""
    if d.is_one:
        return y
    if d.k == 0:
        return y.mul_(d.m)
    m = abs(d.m)
    r = unpack(kept, d.kept_bits, y.shape[-1])  # j = r // m
    if m != 1:  # r = (r mod m) + m * j, where r mod m = (-y * 2^k) mod m, a function of y mod m
        u = torch.arange(m, dtype=torch.int64, device=y.device)
        residue = (-u * 2**d.k).remainder_(m).to(y.dtype)
        r = _lookup(residue, torch.remainder(y, m)).add_(r * m)  # j * m <= 2^k - 1 fits the uint8
    return y.bitwise_left_shift_(d.k).add_(r).mul_(_inverse(d.m, format_of(y).bits))


def _lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for an index of the stream's own integer type (no int64 copy of an int32 stream)."""
    return torch.index_select(table, 0, index.reshape(-1)).view(index.shape)


def _inverse(m: int, bits: int) -> int:
    """m^-1 modulo 2^bits, as a signed integer of that width (m odd)."""
    inv = pow(m, -1, 2**bits)
    return inv - 2**bits if inv >= 2 ** (bits - 1) else inv


def pack(values: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 ``values`` of ``bits`` bits, shape (..., h): two a byte along the last (hidden) dimension,
    whose size the model fixes, when they fit in 4 bits (shape (..., ceil(h / 2))); as they are otherwise."""
    if bits > 4:
        return values
    if values.shape[-1] % 2:
        values = torch.nn.functional.pad(values, (0, 1))
    return values[..., 1::2].mul(16).bitwise_or_(values[..., 0::2])  # (shifts by 4 as products: they trace)


def unpack(packed: torch.Tensor, bits: int, size: int) -> torch.Tensor:
    """The uint8 values ``pack`` packed, shape (..., size)."""
    if bits > 4:
        return packed
    values = torch.stack((packed & 15, packed.div(16, rounding_mode="floor")), dim=-1).flatten(-2)
    return values if values.shape[-1] == size else values[..., :size]


def release(t: torch.Tensor | None) -> None:
    """Free ``t``'s memory now, though autograd still holds the tensor (kept bits that backward has used)."""
    if t is not None:
        t.set_()


def checksum(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x``'s elements as int64 (sums wrap modulo 2^64): it changes when any one element
    changes, whatever order the sum is taken in."""
    return x.sum(dtype=torch.int64).reshape(1)


def has_values(t: torch.Tensor) -> bool:
    return not (is_fake(t) or t.device.type == "meta")


def float_magnitude(t: torch.Tensor) -> torch.Tensor:
    """max |t| as a 0-d float64 tensor; NaN when ``t`` holds a NaN, inf for inf."""
    if not t.numel():
        return torch.zeros((), dtype=torch.float64, device=t.device)
    return t.detach().abs().amax().to(torch.float64)


def int_magnitude(x: torch.Tensor) -> torch.Tensor:
    """max |x| of a fixed-point stream, in real units, as a 0-d float64 tensor (in float64 before
    negating, so that the most negative integer, what a non-finite value encodes to, does not wrap)."""
    if not x.numel():
        return torch.zeros((), dtype=torch.float64, device=x.device)
    low, high = torch.aminmax(x)
    return torch.maximum(high.to(torch.float64), -low.to(torch.float64)) / format_of(x).one


def stream_limit(dtype: torch.dtype) -> float:
    """The largest stream magnitude allowed: the format's range, or less where ``dtype`` (what streams
    decode to) cannot hold it (float16: 65504)."""
    return min(format_for(dtype).limit, torch.finfo(dtype).max)


def check_range(checks: list[tuple[str, torch.Tensor, float]], fmt: Format) -> None:
    """Raise MEFTError naming the first (what, magnitude, limit) whose magnitude is not below its limit
    (NaN included); ``fmt`` is the streams' format (limits below its range are the dtype's). One
    synchronisation for the whole list."""
    if not checks:
        return
    values = torch.stack([m for _, m, _ in checks]).tolist()
    for (name, _, limit), value in zip(checks, values):
        if value < limit:
            continue
        if limit < fmt.limit:
            raise MEFTError(
                f"{name} reaches {value:.6g}, more than the streams' dtype can hold once decoded "
                f"(|x| <= {limit:g}); train in bfloat16 or float32 (or mixed precision), or check for "
                "divergence"
            )
        raise MEFTError(
            f"{name} reaches {value:.6g}, outside exact arithmetic's fixed-point range (|x| < 2^{fmt.range_bits} = "
            f"{int(fmt.limit)}); check the inputs and learning rate for divergence, "
            "or use MEFTConfig(arithmetic='float')"
        )
