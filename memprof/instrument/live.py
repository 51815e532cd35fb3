"""Live-memory ground truth: every storage the step allocates, when it is born and when it dies.

Mechanism: a ``TorchDispatchMode`` sees the output of every operator below autograd, in the
forward, the backward (autograd's own kernels included) and the optimizer step. A new output
storage is an allocation; a weak reference to the storage object, with a callback, is its free
(as ``torch.distributed._tools.mem_tracker`` does). Each is an event on one timeline. After the
step every storage gets a kind and the timeline is replayed to find the peak and what was live at
it. Works the same on real tensors (cpu, cuda) and on fake ones (their storages have sizes).

NOTE [ What is an activation ]
* A storage created during the training forward (from ``begin("forward")`` until backward starts)
  and still alive when backward starts. Everything autograd keeps for backward is such a storage,
  and so are the tensors a non-reentrant checkpoint keeps outside the graph (its layer inputs).
* A storage created while a module's forward runs during backward (a recomputation: gradient
  checkpointing, MEFT's reconstruction) and still alive when that outermost module call returns.
* The batch's own tensors (``register(..., "activations")``).
Storages created in those windows that die inside them are temporaries, as is anything else that is
not a parameter or buffer, a gradient (``p.grad`` when backward ends) or optimizer state (in
``optimizer.state`` when the step ends). Precedence: parameters, optimizer state, gradients,
activations, temporaries.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from memprof.instrument.attention import FUSED_KERNELS
from memprof.results.timeline import KINDS, Timeline, downsample

aten = torch.ops.aten

_PARAM, _GRAD, _OPT, _ACT, _TMP = range(5)
_KIND_INDEX = {k: i for i, k in enumerate(KINDS)}

#: Operators that fill a tensor with random draws: their storages are dropout masks on the CPU.
_RANDOM_INPLACE = frozenset({aten.bernoulli_.float, aten.bernoulli_.Tensor})
_RANDOM_OUT = frozenset({aten.bernoulli.default, aten.bernoulli.p})
_SPECIAL = _RANDOM_INPLACE | _RANDOM_OUT

_graph_task_id = torch._C._current_graph_task_id


class _Ref(weakref.ref):
    __slots__ = ("key", "sid")


@dataclass
class LiveSummary:
    """Byte counts from the replayed timeline (see ``Memory`` for their meaning)."""

    peak: int = 0
    parameters: int = 0
    gradients: int = 0
    optimizer_state: int = 0
    temporaries: int = 0
    activations_at_peak: int = 0
    peak_activations: int = 0
    #: live activation bytes when backward started
    forward_end_activations: int = 0
    #: of those, bytes in storages that are not in ``saved_ids``
    unattributed: int = 0


class LiveTracker(TorchDispatchMode):
    """Records the allocation timeline of everything run while it is the active dispatch mode.

    Phases are marked with ``begin(name)`` (``"forward"``, ``"backward"``, ``"optimizer"``,
    ``"end"``). ``on_backward`` is called once, just before the first operator that runs inside an
    autograd graph task while in the forward phase (how ``memprof.track`` finds backward's start).
    """

    def __init__(self, on_backward: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.nbytes: list[int] = []  # key -> bytes
        self.born: list[int] = []  # key -> event index of its allocation
        self.died: list[int] = []  # key -> event index of its free, -1 while alive
        self.events: list[int] = []  # key: allocation, ~key: free
        self.preset: dict[int, int] = {}  # key -> kind index, for registered tensors
        self.random: set[int] = set()  # keys written by a random-sampling operator
        self.marks: dict[str, int] = {}
        self.recomputes: list[tuple[int, int]] = []
        #: fused attention kernels run in the forward phase (``FUSED_KERNELS`` names), in order
        self.attention_kernels: list[str] = []
        self.phase = ""
        self._refs: dict[int, _Ref] = {}  # id(storage) -> weak reference
        self._recompute_start = -1
        self._on_backward = on_backward
        self._watch_backward = False  # in the forward phase, with someone to tell when backward starts
        self._closed = False

    # -- the mode --------------------------------------------------------------------------

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # nothing is compiled inside; skips a per-operator wrapper

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        # The hot path: one call per operator of the step; keep it lean.
        if self._watch_backward and _graph_task_id() != -1:
            self._on_backward()
        out = func(*args, **kwargs) if kwargs else func(*args)
        kind = type(out)
        if kind is tuple or kind is list:
            for o in out:
                if isinstance(o, torch.Tensor):
                    self._see(o)
        elif isinstance(out, torch.Tensor):
            if func in _SPECIAL:
                self._special(func, args, out)
            else:
                try:
                    sid = id(out.untyped_storage())
                except (RuntimeError, NotImplementedError):
                    return out
                if sid not in self._refs:
                    self._see(out)
        if func in FUSED_KERNELS and self.phase == "forward":
            self.attention_kernels.append(FUSED_KERNELS[func])
        return out

    def _special(self, func, args, out: torch.Tensor) -> None:
        if func in _RANDOM_INPLACE:
            self._see(args[0], random=True)
        else:
            self._see(out, random=func in _RANDOM_OUT)

    def _see(self, t: torch.Tensor, random: bool = False) -> int | None:
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # no storage (sparse, nested): not tracked
            return None
        ref = self._refs.get(id(st))
        if ref is None:
            n = st.nbytes()
            if n == 0:
                return None
            key = len(self.nbytes)
            ref = _Ref(st, self._free)
            ref.key, ref.sid = key, id(st)
            self._refs[ref.sid] = ref
            self.nbytes.append(n)
            self.born.append(len(self.events))
            self.died.append(-1)
            self.events.append(key)
        if random:
            self.random.add(ref.key)
        return ref.key

    def _free(self, ref: _Ref) -> None:
        if self._closed:
            return
        self.died[ref.key] = len(self.events)
        self.events.append(~ref.key)
        if self._refs.get(ref.sid) is ref:
            del self._refs[ref.sid]

    # -- what the session tells it ---------------------------------------------------------

    def register(self, t: torch.Tensor, kind: str) -> None:
        """Track ``t`` (made before the step, or already seen) as ``kind`` from now on."""
        key = self._see(t)
        if key is not None:
            self.preset[key] = _KIND_INDEX[kind]

    def key_of(self, t: torch.Tensor) -> int | None:
        try:
            ref = self._refs.get(id(t.untyped_storage()))
        except (RuntimeError, NotImplementedError):
            return None
        return None if ref is None else ref.key

    def is_random(self, storage_id: int) -> bool:
        ref = self._refs.get(storage_id)
        return ref is not None and ref.key in self.random

    def keys_of_storages(self, storage_ids) -> set[int]:
        """Keys of the live storages with these ids (call while they are alive)."""
        return {self._refs[s].key for s in storage_ids if s in self._refs}

    def begin(self, phase: str) -> None:
        self.phase = phase
        self._watch_backward = phase == "forward" and self._on_backward is not None
        self.marks.setdefault(phase, len(self.events))

    def module_call(self, entering: bool) -> None:
        """Outermost module call starts/ends; during backward that is a recomputation."""
        if self.phase != "backward":
            return
        if entering:
            self._recompute_start = len(self.events)
        elif self._recompute_start >= 0:
            self.recomputes.append((self._recompute_start, len(self.events)))
            self._recompute_start = -1

    def close(self) -> None:
        """Stop listening to frees (storages outliving the step are simply alive at its end)."""
        self.begin("end")
        self._closed = True
        self._refs.clear()

    # -- after the step --------------------------------------------------------------------

    def classify(self, gradients: set[int], optimizer_state: set[int]) -> list[int]:
        """Kind index of every key (see NOTE [ What is an activation ])."""
        n = len(self.nbytes)
        kinds = [_TMP] * n
        fwd = self.marks.get("forward", 0)
        bwd = self.marks.get("backward", self.marks.get("end", len(self.events)))
        born, died = self.born, self.died
        for key in range(n):
            b = born[key]
            if fwd <= b < bwd and (died[key] < 0 or died[key] >= bwd):
                kinds[key] = _ACT
        for start, end in self.recomputes:
            for ev in self.events[start:end]:
                if ev >= 0 and (died[ev] < 0 or died[ev] >= end):
                    kinds[ev] = _ACT
        for key in gradients:
            kinds[key] = _GRAD
        for key in optimizer_state:
            kinds[key] = _OPT
        for key, kind in self.preset.items():
            if kind == _PARAM or kinds[key] not in (_OPT, _GRAD):
                kinds[key] = kind
        return kinds

    def timeline(self, kinds: list[int]) -> Timeline:
        """The step over time, compactly (NOTE [ A compact timeline ] in memprof.results.timeline)."""
        return downsample(self.nbytes, self.events, kinds, self.marks)

    def replay(self, kinds: list[int], saved_keys: set[int]) -> LiveSummary:
        """Walk the timeline: the peak, what was live at it, and the activation figures."""
        nbytes, events = self.nbytes, self.events
        live = [0] * len(KINDS)
        total = peak = peak_at = peak_act = 0
        for i, ev in enumerate(events):
            if ev >= 0:
                n = nbytes[ev]
                live[kinds[ev]] += n
                total += n
                if total > peak:
                    peak, peak_at = total, i + 1
                if kinds[ev] == _ACT and live[_ACT] > peak_act:
                    peak_act = live[_ACT]
            else:
                n = nbytes[~ev]
                live[kinds[~ev]] -= n
                total -= n
        at_peak = [0] * len(KINDS)
        for ev in events[:peak_at]:
            if ev >= 0:
                at_peak[kinds[ev]] += nbytes[ev]
            else:
                at_peak[kinds[~ev]] -= nbytes[~ev]
        bwd = self.marks.get("backward", self.marks.get("end", len(events)))
        fwd_end = unattributed = 0
        for key in range(len(nbytes)):
            if kinds[key] == _ACT and self.born[key] < bwd and (self.died[key] < 0 or self.died[key] >= bwd):
                fwd_end += nbytes[key]
                if key not in saved_keys:
                    unattributed += nbytes[key]
        params = sum(nbytes[k] for k in range(len(nbytes)) if kinds[k] == _PARAM)
        return LiveSummary(
            peak=peak,
            parameters=params,
            gradients=at_peak[_GRAD],
            optimizer_state=at_peak[_OPT],
            temporaries=at_peak[_TMP],
            activations_at_peak=at_peak[_ACT],
            peak_activations=peak_act,
            forward_end_activations=fwd_end,
            unattributed=unattributed,
        )
