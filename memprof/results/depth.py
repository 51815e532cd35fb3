"""A step's storage timeline as tokens, replayed into a formula's parts; and the timeline and the
per-module table of a deeper model, grown from those of two shallow copies of it.

NOTE [ Composing depth ]
A symbolic trace (``memprof.engines.symbolic``) costs time in proportion to the layers it runs, and
the layers of a stack repeat: the step of ``d + 1`` layers is the step of ``d`` layers with one
layer's events added (its forward, its backward, its parameters, gradients and optimizer state),
and a few events whose size counts the layers (a reversible stack's row of kept bits for all its
layers). So the traces of copies of the model at depths ``d`` and ``d + 1`` give the step at any
depth ``d + k``:

* the timeline (``Token``: an allocation or a free, its kind and its size in ``b`` and ``s``) of
  depth ``d`` is aligned with that of ``d + 1`` (``difflib``: runs that are equal, runs that are
  inserted); each inserted run is repeated ``k`` times where it was inserted, and a run whose
  sizes changed (same events, other sizes) changes ``k`` times as much;
* the per-module table likewise, its layer numbers renumbered: a name whose numbers grew by one
  from ``d`` to ``d + 1`` (the top layer, a stack named for its depth) grows by ``k``, and the
  ``c``-th copy of an inserted layer's rows is the layer ``c`` above it.

difflib's alignment is read with care where it is ambiguous: an equal run of at most ``_CHANCE``
items between two differing stretches is read with them (an item of the new layer matched by
chance); a stretch that differs is read item by item (``_resolve``) as changed items in order and
inserted runs between them, an inserted run as one run of layers or as the end of one run and the
start of the next (the last layer's parameters, then the first adapter's: they must stay apart),
and an inserted run whose items' sizes count the layers too (Ladder side tuning's gates, which every
layer's backward reads) takes its sizes from the copy two layers deeper. Of the readings, the one
that grows ``d`` into ``d + 2`` is kept.

Nothing is assumed that a third trace does not confirm: the caller grows ``d`` and ``d + 1`` into
``d + 2`` and compares it with a trace of ``d + 2``, token for token and row for row, before it grows
them into the model's depth (``NotComposable`` otherwise). A timeline of the full depth is then
replayed exactly as a trace's is (``replay``), so every event that can be the peak at that depth is
a candidate. This module imports neither torch nor meft: it works on polynomials.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from difflib import SequenceMatcher
from typing import Any, NamedTuple, TypeVar

from memprof.results.module_names import is_layer_number
from memprof.results.polynomial import Poly, add_candidate
from memprof.results.timeline import KINDS

_PARAM, _GRAD, _OPT, _ACT, _TMP = (
    KINDS.index(k) for k in ("parameters", "gradients", "optimizer_state", "activations", "temporaries")
)
_NUMBER = re.compile(r"\d+")

T = TypeVar("T")
Row = tuple[str, dict[str, Poly]]


class NotComposable(Exception):
    """The deeper step is not the shallow one with layers added; the message says where."""


class Token(NamedTuple):
    """One event of a step's storage timeline: ``alloc`` (else a free), the storage's kind (an
    index of ``KINDS``), its bytes, and whether it counts as an unattributed activation (alive
    when backward starts, kept by no saved tensor; allocations only)."""

    alloc: bool
    kind: int
    nbytes: Poly
    unattributed: bool = False


def replay(tokens: Sequence[Token]) -> dict[str, Any]:
    """A formula's parts from its timeline: the sums, every event that can be the peak (with the
    split of live memory there) and every one that can be the peak of activations."""
    now = [Poly()] * len(KINDS)
    total = Poly()
    peaks: list[tuple[Poly, tuple[Poly, ...]]] = [(Poly(), tuple(now))]
    peak_acts: list[tuple[Poly, None]] = [(Poly(), None)]
    parameters = unattributed = Poly()
    for t in tokens:
        if t.alloc:
            now[t.kind] = now[t.kind] + t.nbytes
            total = total + t.nbytes
            add_candidate(peaks, total, tuple(now))
            if t.kind == _ACT:
                add_candidate(peak_acts, now[_ACT], None)
            if t.kind == _PARAM:
                parameters = parameters + t.nbytes
            if t.unattributed:
                unattributed = unattributed + t.nbytes
        else:
            now[t.kind] = now[t.kind] - t.nbytes
            total = total - t.nbytes
    at_peak = [
        {
            "peak": p,
            "gradients": split[_GRAD],
            "optimizer_state": split[_OPT],
            "temporaries": split[_TMP],
            "activations_at_peak": split[_ACT],
        }
        for p, split in peaks
    ]
    return {
        "sums": {"parameters": parameters, "unattributed": unattributed},
        "peaks": at_peak,
        "peak_activations": [p for p, _ in peak_acts],
    }


def grow_timeline(timelines: Sequence[Sequence[Token]], k: int) -> list[Token]:
    """The timeline ``k`` layers deeper than ``timelines[0]``, given the timelines one and two layers
    deeper than it (``timelines[1]``, ``timelines[2]``)."""

    def scaled(a: Token, b: Token, k: int) -> Token:  # a and b of the same coarse key (``_resolve``)
        return a._replace(nbytes=_linear(a.nbytes, b.nbytes, k))

    return _grow(
        timelines,
        k,
        key=lambda t: t,
        coarse=lambda t: (t.alloc, t.kind, t.unattributed),
        changed=scaled,
        copy=lambda t, c: t,
        resizes=True,
    )


def grow_rows(tables: Sequence[Sequence[Row]], k: int) -> list[Row]:
    """The per-module table (module, {category: bytes}) ``k`` layers deeper than ``tables[0]``,
    given the tables one and two layers deeper."""

    def coarse(row: Row) -> tuple:
        return _NUMBER.sub("#", row[0]), tuple(sorted(row[1]))

    def changed(a: Row, b: Row, k: int) -> Row:
        return _renumbered(a[0], b[0], k), {c: _linear(a[1][c], b[1][c], k) for c in a[1]}

    def copy(row: Row, c: int) -> Row:
        return _layer_above(row[0], c), row[1]

    return _grow(
        tables,
        k,
        key=lambda row: (coarse(row), tuple(sorted(row[1].items(), key=lambda kv: kv[0]))),
        coarse=coarse,
        changed=changed,
        copy=copy,
        resizes=False,
    )


def grow_count(shallow: int, deeper: int, k: int) -> int:
    """A count (parameters) ``k`` layers deeper."""
    return shallow + k * (deeper - shallow)


class _Grower(NamedTuple):
    #: an item ``k`` layers deeper, given it and its counterpart one layer deeper (an item kept
    #: unchanged is the same item, renumbered)
    changed: Callable[[Any, Any, int], Any]
    copy: Callable[[Any, int], Any]
    #: whether an inserted item may take its size from its copy two layers deeper (else it keeps its own)
    resizes: bool

    def inserted(self, runs: list[list], k: int) -> list:
        return [self.copy(y, c) for run in runs for c in range(k) for y in run]

    def grown(self, steps: list[tuple], k: int) -> list:
        out: list = []
        for how, x, y in steps:
            if how in ("kept", "changed"):
                out.append(self.changed(x, y, k))
            elif how == "sized":  # x at one layer deeper, y at two: k layers deeper is k - 1 past x
                out += [
                    self.copy(self.changed(i, j, k - 1), c)
                    for r, s in zip(x, y)
                    for c in range(k)
                    for i, j in zip(r, s)
                ]
            else:
                out += self.inserted(x, k)
        return out

    def resized(self, runs: list[list], deepest: list, pos: int, coarse: Callable) -> list[list] | None:
        """The inserted ``runs`` as two layers deeper has them, where sizes of theirs count the layers
        (Ladder side tuning's gates: a layer's backward reads all of them): both copies alike."""
        if not self.resizes or not any(runs):
            return None
        out = []
        for run in runs:
            first, second = deepest[pos : pos + len(run)], deepest[pos + len(run) : pos + 2 * len(run)]
            if first != second or len(first) != len(run) or any(coarse(y) != coarse(z) for y, z in zip(run, first)):
                return None
            out.append(first)
            pos += 2 * len(run)
        return out


#: the most partial readings ``_resolve`` tries for one stretch where the two steps differ, and the
#: most items of the shallow step such a stretch may hold (one level of its search each)
_MAX_TRIES = 20_000
_MAX_CHANGED = 300


def _grow(
    seqs: Sequence[Sequence[T]],
    k: int,
    *,
    key: Callable[[T], Any],
    coarse: Callable[[T], Any],
    changed: Callable[[T, T, int], T],
    copy: Callable[[T, int], T],
    resizes: bool,
) -> list[T]:
    """``seqs[0]`` grown by ``k`` layers, where ``seqs[1]`` and ``seqs[2]`` are it grown by one and
    by two. Aligned with ``seqs[1]`` (by ``key``): equal items are kept (renumbered by ``changed``); where the two
    differ, each item of ``seqs[0]`` is an item of the same ``coarse`` key whose size counts the
    layers (``changed``: ``k`` times the change) and the others are inserted runs of layers, each
    repeated ``k`` times (``copy`` of the c-th), one run or two (the end of one run of layers and
    the start of the next: the last layer's parameters, then the first adapter's). Of the ways to
    read a stretch so, the one that grows it by two layers into ``seqs[2]`` is the one grown by
    ``k``; NotComposable where none does."""
    shallow, deeper, deepest = (list(x) for x in seqs)
    grower = _Grower(changed, copy, resizes)
    steps: list[tuple] = []
    at = 0  # where the next stretch, grown by two layers, starts in ``deepest``
    for op, i1, i2, j1, j2 in _stretches(shallow, deeper, key):
        if op == "equal":
            kept = [("kept", x, y) for x, y in zip(shallow[i1:i2], deeper[j1:j2])]
            grown = grower.grown(kept, 2)
            if grown != deepest[at : at + len(grown)]:
                raise NotComposable("two layers deeper is not one layer deeper with one more layer")
            steps += kept
            at += len(grown)
        else:
            read, at = _resolve(shallow, i1, i2, deeper[j1:j2], deepest, at, grower, coarse)
            steps += read
    if at != len(deepest):
        raise NotComposable("two layers deeper has more events than one layer deeper with one more layer")
    return grower.grown(steps, k)


#: an equal run this short between two stretches that differ is read with them: difflib matches an
#: item of an inserted layer with one of the step's by chance
_CHANCE = 16


def _stretches(a: list, b: list, key: Callable[[Any], Any]) -> list[tuple[str, int, int, int, int]]:
    """``difflib``'s alignment of ``a`` with ``b`` in stretches that are equal or differ: runs of
    differing opcodes, and equal runs of at most ``_CHANCE`` items between them, joined into one."""
    ids: dict[Any, int] = {}
    x = [ids.setdefault(key(t), len(ids)) for t in a]
    y = [ids.setdefault(key(t), len(ids)) for t in b]
    ops = [
        ("equal" if op == "equal" else "differ", i1, i2, j1, j2)
        for op, i1, i2, j1, j2 in SequenceMatcher(None, x, y, autojunk=False).get_opcodes()
    ]
    out: list[tuple[str, int, int, int, int]] = []
    for n, (op, i1, i2, j1, j2) in enumerate(ops):
        between = op == "equal" and i2 - i1 <= _CHANCE and 0 < n < len(ops) - 1
        if out and out[-1][0] == "differ" and (op == "differ" or between and ops[n + 1][0] == "differ"):
            out[-1] = ("differ", out[-1][1], i2, out[-1][3], j2)
        else:
            out.append((op, i1, i2, j1, j2))
    return out


def _resolve(
    shallow: list, i1: int, i2: int, b: list, deepest: list, at: int, grower: _Grower, coarse: Callable
) -> tuple[list[tuple], int]:
    """The reading of the stretch ``shallow[i1:i2]`` -> ``b`` that grows into ``deepest[at:]`` (see
    ``_grow``), found item by item, each partial reading checked against ``deepest`` as it grows."""
    a = shallow[i1:i2]
    if len(a) > _MAX_CHANGED:
        raise NotComposable(f"one layer deeper, a stretch of {len(a)} events of the step changes: too long to read")
    tries = 0

    def gaps(lo: int, hi: int, before: int) -> list[list[list]]:
        run = b[lo:hi]
        return _readings(shallow, before, run) if run else [[]]

    def search(i: int, start: int, pos: int) -> tuple[list[tuple], int] | None:
        nonlocal tries
        tries += 1
        if tries > _MAX_TRIES:
            raise NotComposable("one layer deeper, a stretch of the step differs in too many ways to try")
        ends = [len(b)] if i == len(a) else [j for j in range(start, len(b)) if coarse(b[j]) == coarse(a[i])]
        for j in ends:
            for runs in gaps(start, j, i1 + i):
                step = [("inserted", runs, None)] + ([] if i == len(a) else [("changed", a[i], b[j])])
                grown = grower.grown(step, 2)
                if grown != deepest[pos : pos + len(grown)]:
                    resized = grower.resized(runs, deepest, pos, coarse)
                    if resized is None:
                        continue
                    step[0] = ("sized", runs, resized)
                    grown = grower.grown(step, 2)
                    if grown != deepest[pos : pos + len(grown)]:
                        continue
                if i == len(a):
                    return step, pos + len(grown)
                rest = search(i + 1, j + 1, pos + len(grown))
                if rest is not None:
                    return step + rest[0], rest[1]
        return None

    found = search(0, 0, at)
    if found is None:
        raise NotComposable("where one layer deeper differs, two layers deeper differs otherwise")
    return found


def _readings(shallow: Sequence[T], i: int, run: list[T]) -> list[list[list[T]]]:
    """Ways to read ``run``, inserted before ``shallow[i]``: one run of layers, or two where its
    first ``m`` items repeat the ``m`` before the insertion and the rest the items after it (the
    end of one run of layers and the start of the next)."""
    ways = [[run]]
    for m in range(1, len(run)):
        if list(shallow[max(0, i - m) : i]) == run[:m] and list(shallow[i : i + len(run) - m]) == run[m:]:
            ways.append([run[:m], run[m:]])
    return ways


def _linear(a: Poly, b: Poly, k: int) -> Poly:
    return a if a == b else a + (b - a) * k


def _renumbered(a: str, b: str, k: int) -> str:
    """``a``'s name ``k`` layers deeper, where ``b`` is its name one layer deeper: each number that
    grew by one (a layer counted from the top, a stack named for its depth) grows by ``k``."""
    grown = iter(int(y) - int(x) for x, y in zip(_NUMBER.findall(a), _NUMBER.findall(b)))
    return _NUMBER.sub(lambda m: str(int(m.group()) + k * next(grown)), a)


def _layer_above(name: str, c: int) -> str:
    """The module ``c`` layers above ``name``: its layer number (the first component that is one) plus ``c``."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if is_layer_number(part):
            parts[i] = str(int(part) + c)
            break
    return ".".join(parts)
