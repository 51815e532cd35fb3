"""The step over time: live bytes by kind through forward, backward and the optimizer step, kept
compactly in a Result (``Result.timeline``) for the timeline plot.

NOTE [ A compact timeline ]
The live tracker (``memprof.instrument.live``) records every allocation and free of the step: a
state after each event, tens of thousands of them for a large model. ``downsample`` keeps at most
about ``MAX_POINTS`` of those states, exactly as they were (each point's kinds add up to the live
total after that event), chosen so that the picture keeps its shape and its landmarks:
  - the events are cut into ``MAX_POINTS // 2`` equal runs, and in each run the state with the most
    and the one with the fewest live bytes are kept (a spike or a dip shorter than a run survives);
  - the first state, the last, the state at the start of each phase and the peak (the first state
    holding the most live bytes, the one ``Memory.peak`` reports) are always kept.
So the stored peak is the measured peak to the byte, and which phase it falls in is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from memprof.results.schema import MISSING, Reader

#: What live memory is split into, in the order it is stacked (as ``Memory`` names its parts).
KINDS = ("parameters", "gradients", "optimizer_state", "activations", "temporaries")
#: The phases of a training step, in order; ``end`` marks the last event.
PHASES = ("forward", "backward", "optimizer")
#: At most about this many points are kept (NOTE [ A compact timeline ]).
MAX_POINTS = 300

_FIELDS = ("events", "event", "live", "phases", "peak_point")


@dataclass
class Timeline:
    """Live bytes of one step at chosen moments (NOTE [ A compact timeline ]).

    ``event[i]`` is how many allocation and free events had happened at point ``i`` (0 to
    ``events``, increasing); ``live[kind][i]`` the bytes of that kind then. ``phases`` maps each
    phase the step went through to the event count at which it began. ``peak_point`` is the point
    of the peak.
    """

    events: int
    event: list[int]
    live: dict[str, list[int]]
    phases: dict[str, int]
    peak_point: int

    def total(self, i: int) -> int:
        return sum(self.live[k][i] for k in KINDS)

    @property
    def peak(self) -> int:
        return self.total(self.peak_point)

    def phase_at(self, event: int) -> str:
        """The phase running at ``event`` ("" before the first phase began)."""
        started = [(at, name) for name, at in self.phases.items() if at <= event and name in PHASES]
        return max(started)[1] if started else ""

    @property
    def peak_phase(self) -> str:
        return self.phase_at(self.event[self.peak_point])

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "event": list(self.event),
            "live": {k: list(self.live[k]) for k in KINDS},
            "phases": dict(self.phases),
            "peak_point": self.peak_point,
        }

    @classmethod
    def read(cls, check: Reader, data: Any) -> Timeline:
        """The Timeline ``data`` (``to_dict``'s form) holds, checked with ``check`` (field ``timeline``)."""
        check.fields(data, "timeline", _FIELDS)
        events = check.whole(data.get("events", MISSING), "timeline.events")
        event = _counts(check, data.get("event", MISSING), "timeline.event")
        live = check.fields(data.get("live", MISSING), "timeline.live", KINDS)
        parts = {k: _counts(check, live.get(k, MISSING), f"timeline.live.{k}", len(event)) for k in KINDS}
        phases = check.fields(data.get("phases", MISSING), "timeline.phases", (*PHASES, "end"))
        peak = check.whole(data.get("peak_point", MISSING), "timeline.peak_point")
        marks = {k: check.whole(v, f"timeline.phases.{k}") for k, v in phases.items()}
        for k, at in marks.items():
            if at > events:
                check.fail(f"timeline.phases.{k}", f"is {at}, must be at most timeline.events ({events})")
        if not event or peak >= len(event) or any(b <= a for a, b in zip(event, event[1:])) or event[-1] > events:
            check.fail(
                "timeline.event",
                f"must hold increasing event counts up to timeline.events ({events}), "
                "and timeline.peak_point must index one of them",
            )
        return cls(events, event, parts, marks, peak)


def _counts(check: Reader, value: Any, name: str, length: int | None = None) -> list[int]:
    if not isinstance(value, list):
        check.bad(name, value, "an array of whole numbers")
    if length is not None and len(value) != length:
        check.fail(name, f"holds {len(value)} numbers, must hold one per point ({length}, as timeline.event)")
    return [check.whole(v, f"{name}[{i}]") for i, v in enumerate(value)]


def downsample(
    nbytes: Sequence[int],
    events: Sequence[int],
    kinds: Sequence[int],
    marks: dict[str, int],
    max_points: int = MAX_POINTS,
) -> Timeline:
    """The compact timeline of a recorded step (NOTE [ A compact timeline ]): ``events`` as the
    live tracker keeps them (``key`` an allocation of ``nbytes[key]`` bytes, ``~key`` its free),
    ``kinds[key]`` an index into ``KINDS``, ``marks`` the event count at which each phase began."""
    n = len(events)
    totals = [0] * (n + 1)  # totals[i]: live bytes after the first i events
    total = 0
    for i, ev in enumerate(events):
        total += nbytes[ev] if ev >= 0 else -nbytes[~ev]
        totals[i + 1] = total
    peak = max(range(n + 1), key=totals.__getitem__)  # the first state at the peak
    keep = {0, n, peak}
    keep |= {min(max(at, 0), n) for at in marks.values()}
    runs = max(1, max_points // 2)
    for r in range(runs):
        lo, hi = r * (n + 1) // runs, (r + 1) * (n + 1) // runs
        if hi > lo:
            span = range(lo, hi)
            keep |= {max(span, key=totals.__getitem__), min(span, key=totals.__getitem__)}
    points = sorted(keep)
    live = [0] * len(KINDS)
    parts: list[list[int]] = [[] for _ in KINDS]
    applied = 0
    for at in points:
        for ev in events[applied:at]:
            if ev >= 0:
                live[kinds[ev]] += nbytes[ev]
            else:
                live[kinds[~ev]] -= nbytes[~ev]
        applied = at
        for k, part in enumerate(parts):
            part.append(live[k])
    phases = {name: min(max(at, 0), n) for name, at in marks.items() if name in (*PHASES, "end")}
    return Timeline(n, points, dict(zip(KINDS, parts)), phases, points.index(peak))
