"""The search of ``memprof fit``: the largest size whose memory fits a budget, in few profiles.

NOTE [ Searching ]
Memory grows with batch size (and sequence length), piecewise close to linear: once activations
dominate, each more sample adds the same bytes (sequence length adds at most quadratically, eager
attention's scores). The search profiles two small sizes, then repeatedly draws the line through
the two largest sizes that fit (or through the largest that fits and the smallest that does not)
to where it meets the budget, profiles that guess and its neighbour, and stops when a size that
fits sits next to one that does not. A guess goes at most ``GROWTH`` times past the largest size
known to fit (ft's peak is its optimizer step until activations outgrow it: flat at first), and
every ``BISECT_EVERY``-th round bisects, which bounds a run of bad guesses. Every answer is a
size that was profiled and fits, next to a profiled size one larger that does not (unless the
answer is the cap: the backbone's positions, or ``MAX_BATCH``). Where memory is linear past the
probes that is four profiles per method; a kink costs a few more (ft on opt-1.3b: ten in all,
BENCHMARKS.md). ``fit`` then profiles the first step at the answer, for comparison only.
"""

from __future__ import annotations

from collections.abc import Callable

#: A guess is at most this many times the largest size known to fit: memory that barely grows
#: over the first sizes (ft's peak sits in the optimizer step until activations outgrow it) would
#: otherwise extrapolate to the cap.
GROWTH = 16
#: Every this many rounds the search bisects instead of interpolating (a bound on bad guesses).
BISECT_EVERY = 3


def search(need: Callable[[int], int], budget: int, probes: tuple[int, ...], cap: int) -> tuple[int, str]:
    """(largest size n in 1..cap with ``need(n) <= budget``, "budget" or "cap") for a ``need``
    that grows with n (NOTE [ Searching ]); 0 when not even 1 fits. ``need`` is called once per
    size tried."""
    known: dict[int, int] = {}

    def fits(n: int) -> bool:
        if n not in known:
            known[n] = need(n)
        return known[n] <= budget

    lo, hi = 0, cap + 1  # fits(lo) (0: nothing), not fits(hi) (cap + 1: nothing known not to fit)
    for p in probes:
        if p > cap:
            break
        if not fits(p):
            hi = p
            break
        lo = p
    rounds = 0
    while hi - lo > 1:
        g = _next_guess(known, lo, hi, cap, budget, bisect=rounds % BISECT_EVERY == BISECT_EVERY - 1)
        rounds += 1
        if fits(g):
            lo = g
            n = g + 1  # an exact guess is settled by its neighbour
        else:
            hi = g
            n = g - 1
        if lo < n < hi:
            lo, hi = (n, hi) if fits(n) else (lo, n)
    return lo, "cap" if hi > cap else "budget"


def _next_guess(known: dict[int, int], lo: int, hi: int, cap: int, budget: int, bisect: bool) -> int:
    """The next size to try, strictly between ``lo`` and ``hi``: where the line through the two
    largest sizes that fit (or through ``lo`` and ``hi``) meets ``budget``, within ``GROWTH``."""
    upper = hi - 1 if hi <= cap else min(cap, max(lo, 1) * GROWTH)
    if hi <= cap and (bisect or lo == 0):
        return (lo + hi) // 2
    fitting = sorted(n for n in known if n <= lo)
    a, b = (lo, hi) if hi <= cap else (fitting[-2], fitting[-1]) if len(fitting) > 1 else (lo, lo)
    slope = (known[b] - known[a]) / (b - a) if b > a else 0.0
    g = a + int((budget - known[a]) // slope) if slope > 0 else upper
    return max(lo + 1, min(g, upper))
