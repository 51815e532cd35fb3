"""Fixed-point streams for exact reversible arithmetic (MacKay et al., "Reversible Recurrent Neural
Networks", NeurIPS 2018), as MEFT's ``arithmetic="exact"`` uses them.

A stream value x is held as the int64 X = trunc(x * 2^FRACTION_BITS). Integer addition and
subtraction are exact, and a scale lam = m / 2^k (a ``Dyadic``) is applied as ``(X * m) >> k``,
keeping the k bits the shift drops (the low byte of ``X * m``, one uint8 per element), so that
``X = ((((X * m) >> k) << k) + (kept & (2^k - 1))) / m`` restores X exactly, the division being exact.

NOTE [ Range ]
|X| is kept below 2^(FRACTION_BITS + RANGE_BITS), i.e. real values below 2^22 (about 4.2 million;
OPT's largest hidden values are in the thousands), and |m| <= 2^MAX_SHIFT, so ``X * m`` stays below
2^62 and never wraps. F and G outputs are checked against the same bound before they are encoded
(a non-finite output fails the check). Checks are skipped on fake and meta tensors, which have no
values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch._subclasses.fake_tensor import is_fake

from meft.errors import MEFTError

FRACTION_BITS = 32
RANGE_BITS = 22
#: Largest number of low bits one scaling may discard (they are kept in one uint8 per element).
MAX_SHIFT = 8
LIMIT = 2 ** RANGE_BITS  # in real units
_INT_LIMIT = 2 ** (RANGE_BITS + FRACTION_BITS)
_ONE = float(2 ** FRACTION_BITS)


@dataclass(frozen=True)
class Dyadic:
    """The rational ``m / 2^k`` in lowest terms (m odd unless k = 0)."""

    m: int
    k: int

    @property
    def value(self) -> float:
        return self.m / 2**self.k

    def __str__(self) -> str:
        return str(self.m) if self.k == 0 else f"{self.m}/{2 ** self.k}"


def dyadic(name: str, value: float) -> Dyadic:
    """``value`` rounded to the nearest multiple of 2^-MAX_SHIFT, in lowest terms.

    0.1 becomes 26/256 = 13/128 = 0.1015625 (7 kept bits per element); 1 stays 1 (nothing kept).
    Raises MEFTError for a value that rounds to 0 (it needs more than MAX_SHIFT discarded bits)
    or whose numerator would be too large for the range (|value| > 1).
    """
    if not math.isfinite(value) or value == 0:
        raise MEFTError(f"{name}={value!r} cannot scale a reversible stream; pass a finite non-zero {name} such as 0.1")
    if abs(value) > 1:
        raise MEFTError(f"{name}={value!r} is outside [-1, 1], where exact arithmetic keeps its range; "
                        f"pass |{name}| <= 1, or arithmetic='float'")
    m, k = round(value * 2**MAX_SHIFT), MAX_SHIFT
    if m == 0:
        raise MEFTError(f"{name}={value!r} needs more than {MAX_SHIFT} discarded bits per element (exact arithmetic "
                        f"uses multiples of 1/{2 ** MAX_SHIFT}); pass |{name}| >= {1 / 2 ** MAX_SHIFT}, "
                        "or arithmetic='float'")
    while k > 0 and m % 2 == 0:
        m, k = m // 2, k - 1
    return Dyadic(m, k)


def encode(x: torch.Tensor) -> torch.Tensor:
    """Float tensor -> int64 fixed point, truncating below 2^-FRACTION_BITS (deterministic).

    Scaling by 2^FRACTION_BITS is exact in float32, bfloat16 and float64 (a power of two within
    their exponent range); float16's range is too small, so it goes through float32.
    """
    if x.dtype == torch.float16:
        x = x.float()
    return (x * _ONE).to(torch.int64)


def decode(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """int64 fixed point -> float tensor of ``dtype``: converted to float32 (float64 for float64) and scaled
    by the exact power of two 2^-FRACTION_BITS, then rounded once more for 16-bit dtypes."""
    y = x.to(torch.float64 if dtype == torch.float64 else torch.float32).mul_(1 / _ONE)
    return y if y.dtype == dtype else y.to(dtype)


def scale(x: torch.Tensor, d: Dyadic) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(floor(x * m / 2^k), the low byte of x * m, whose k low bits the shift drops), or (x, None) when d is 1."""
    if d.k == 0 and d.m == 1:
        return x, None
    product = x * d.m
    if d.k == 0:
        return product, None
    kept = product.to(torch.uint8)  # int64 -> uint8 keeps the low 8 bits
    return product.bitwise_right_shift_(d.k), kept  # in place: one int64 temporary less at the peak


def unscale(z: torch.Tensor, kept: torch.Tensor | None, d: Dyadic) -> torch.Tensor:
    """The x that ``scale`` turned into (z, kept): exact (a new tensor unless d is 1).

    x * m is rebuilt from z and the kept bits, then divided by m exactly by multiplying with m's inverse
    modulo 2^64 (m is odd; int64 products wrap), which is ten times faster than integer division.
    """
    if d.k == 0 and d.m == 1:
        return z
    product = z.clone() if d.k == 0 else (z << d.k).add_(kept & (2**d.k - 1))
    return product.mul_(_inverse(d.m))


def _inverse(m: int) -> int:
    """m^-1 modulo 2^64, as a signed int64 (m odd, or +-1)."""
    inv = pow(m, -1, 2**64)
    return inv - 2**64 if inv >= 2**63 else inv


def checksum(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x``'s elements modulo 2^64 (int64 sums wrap): it changes when any one element changes,
    whatever order the sum is taken in."""
    return x.sum().reshape(1)


def has_values(t: torch.Tensor) -> bool:
    return not (is_fake(t) or t.device.type == "meta")


def float_magnitude(t: torch.Tensor) -> torch.Tensor:
    """max |t| as a 0-d float64 tensor; NaN when ``t`` holds a NaN, inf for inf."""
    if not t.numel():
        return torch.zeros((), dtype=torch.float64, device=t.device)
    return t.detach().abs().amax().to(torch.float64)


def int_magnitude(x: torch.Tensor) -> torch.Tensor:
    """max |x| of an int64 stream, in real units, as a 0-d float64 tensor (in float64 before negating,
    so that the most negative int64, what a non-finite value encodes to, does not wrap)."""
    if not x.numel():
        return torch.zeros((), dtype=torch.float64, device=x.device)
    low, high = torch.aminmax(x)
    return torch.maximum(high.to(torch.float64), -low.to(torch.float64)) / _ONE


def stream_limit(dtype: torch.dtype) -> float:
    """The largest stream magnitude allowed: the fixed-point range, or less where ``dtype`` (what streams
    decode to) cannot hold it (float16: 65504)."""
    return min(float(LIMIT), torch.finfo(dtype).max)


def check_range(checks: list[tuple[str, torch.Tensor, float]]) -> None:
    """Raise MEFTError naming the first (what, magnitude, limit) whose magnitude is not below its limit
    (NaN included). One synchronisation for the whole list."""
    if not checks:
        return
    values = torch.stack([m for _, m, _ in checks]).tolist()
    for (name, _, limit), value in zip(checks, values):
        if value < limit:
            continue
        if limit < LIMIT:
            raise MEFTError(f"{name} reaches {value:.6g}, more than the streams' dtype can hold once decoded "
                            f"(|x| <= {limit:g}); train in bfloat16 or float32 (or mixed precision), or check for "
                            "divergence")
        raise MEFTError(
            f"{name} reaches {value:.6g}, outside exact arithmetic's fixed-point range (|x| < 2^{RANGE_BITS} = "
            f"{LIMIT}); check the inputs and learning rate for divergence, or use MEFTConfig(arithmetic='float')"
        )
