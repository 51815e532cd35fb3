"""Saved-activation accounting: what the training forward keeps for backward, per module and category.

Mechanism: ``torch.autograd.graph.saved_tensors_hooks``. Its pack hook is called every time an
operator saves a tensor for backward; here it records the tensor's storage, the innermost module
running at that moment (``ModuleStack``) and the autograd node doing the saving, then hands the
tensor back unchanged (detached, as the hook's contract asks). After the forward the records still
alive are the saved activations.

NOTE [ One storage, one allocation ]
Records are keyed on the live ``UntypedStorage`` object (``t.untyped_storage()`` returns the same
Python object for every view of a storage), never on data pointers, which the allocator reuses.
A weak reference forgets a storage when it dies, so a dead storage's id that Python hands to a new
one cannot collide. A storage's bytes are counted once however many views of it are saved, and
whichever node saves it first owns it (module and category). Storages of parameters and buffers,
frozen or trainable, are never activations (they are ``Memory.parameters``).

NOTE [ Which node saved a tensor ]
The pack hook is not told which node it runs for, but autograd numbers nodes as it creates them
(``Node._sequence_nr()``) and packs an operator's tensors right after creating its node, before any
other node exists. So the node saving a tensor is the one numbered ``_get_sequence_nr() - 1`` at
pack time. After the forward, one walk of the graph (``next_functions``) from the outputs maps
numbers to node names; only names and numbers are read, never the saved tensors themselves, so the
walk neither runs another hook (a checkpoint's unpack hook would recompute the region) nor creates
a tensor. Inside a non-reentrant checkpoint, torch's own hooks replace these ones (only the
innermost pair runs): what such a region keeps inside is invisible here. Its inputs are another
matter: ``torch.utils.checkpoint`` saves them itself (``_CheckpointFrame.save_inputs``, outside its
hooks), so they are packed here, with no node of their own; the pack hook recognises the caller
and files them under the checkpointed layer as ``other``. Only what nothing saves -- tensors kept
as attributes of a ``ctx``, or by Python references -- is ``Memory.unattributed``.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
import torch.utils.checkpoint

from memprof.instrument.categories import category
from memprof.instrument.modules import ModuleStack
from memprof.results.result import CATEGORIES, LAYER_COLUMNS, empty_layers

_next_sequence_nr = torch._C._autograd._get_sequence_nr
#: Code that saves tensors without creating a node (see NOTE [ Which node saved a tensor ]).
_NODELESS_SAVERS = frozenset({torch.utils.checkpoint.__file__})


class _Record(weakref.ref):
    """One saved storage (weakly referenced): its bytes, the module and node that saved it first, and
    the dtype it was saved as (categories.py tells some tensors of one node apart by it)."""

    __slots__ = ("sid", "nbytes", "module", "seq", "dtype")


@dataclass
class SavedSummary:
    """What the forward left saved for backward: unique bytes, per module and category."""

    total: int = 0
    layers: pd.DataFrame = field(default_factory=empty_layers)
    #: id() of every saved storage (alive when the summary was taken).
    storage_ids: frozenset[int] = frozenset()


class SavedTensorTracker:
    """Records every tensor saved for backward while ``recording`` is true.

    Use ``hooks()`` as the context manager around the step; set ``recording`` for the training
    forward only (saves made in backward, by recomputation, are not the forward's activations).
    ``exclude`` lists storages that are never activations (parameters, buffers).
    ``random_mask(storage_id)`` says whether a storage was written by a random-sampling operator
    (see NOTE [ Dropout on the CPU ] in categories.py).
    """

    def __init__(
        self,
        stack: ModuleStack,
        exclude: Iterable[torch.UntypedStorage] = (),
        random_mask: Callable[[int], bool] | None = None,
    ) -> None:
        self.stack = stack
        self.recording = False
        self.random_mask = random_mask
        self._exclude = {id(st) for st in exclude}
        self._exclude_refs = list(exclude)  # keep them alive: their ids must not be reused
        self._records: dict[int, _Record] = {}
        self._names: dict[int, str] = {}  # sequence number -> node name
        self._seen_seq: set[int] = set()

    # -- the hooks -------------------------------------------------------------------------

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)

    def _pack(self, t: torch.Tensor) -> Any:
        if self.recording:
            try:
                st = t.untyped_storage()
            except (RuntimeError, NotImplementedError):  # no storage (nested, sparse): not counted
                return _keep(t)
            sid = id(st)
            if sid not in self._records and sid not in self._exclude:
                caller = sys._getframe(1).f_code.co_filename
                rec = _Record(st, self._forget)
                rec.sid, rec.nbytes, rec.module, rec.dtype = sid, st.nbytes(), self.stack.current, t.dtype
                rec.seq = -1 if caller in _NODELESS_SAVERS else _next_sequence_nr() - 1
                self._records[sid] = rec
        return _keep(t)

    # -- naming nodes ----------------------------------------------------------------------

    def name_nodes(self, roots: Iterable[Any]) -> None:
        """Walk the autograd graph from ``roots`` (tensors or nodes), learning node names.

        Call it while the graph is whole: at the end of the forward, or as backward starts. It
        keeps no reference to any node or tensor.
        """
        stack = []
        for root in roots:
            node = root.grad_fn if isinstance(root, torch.Tensor) else root
            if node is not None:
                stack.append(node)
        names, seen = self._names, self._seen_seq
        while stack:
            node = stack.pop()
            seq = node._sequence_nr()
            if seq in seen:
                continue
            seen.add(seq)
            names[seq] = node.name()
            for nxt, _ in node.next_functions:
                if nxt is not None:
                    stack.append(nxt)
        stack.clear()

    # -- the result ------------------------------------------------------------------------

    def summary(self) -> SavedSummary:
        """Saved storages alive now, grouped by module (first-saved order) and category."""
        rows, alive = self.grouped()
        total = sum(n for cats in rows.values() for n in cats.values())
        if not rows:
            return SavedSummary(storage_ids=frozenset(alive))
        frame = pd.DataFrame(
            [{"module": m, "saved_bytes": sum(c.values()), **c} for m, c in rows.items()], columns=list(LAYER_COLUMNS)
        ).astype({c: "int64" for c in LAYER_COLUMNS[1:]})
        return SavedSummary(total=total, layers=frame, storage_ids=frozenset(alive))

    def grouped(self) -> tuple[dict[str, dict[str, Any]], list[int]]:
        """(bytes by module and category, ids of the saved storages alive now); the
        byte counts are whatever the storages report: ints, or symbolic sizes in a formula trace."""
        rows: dict[str, dict[str, Any]] = {}
        alive = []
        for sid, rec in list(self._records.items()):
            if rec() is None:
                continue
            alive.append(sid)
            cat = category(
                self._names.get(rec.seq), rec.dtype, random_mask=bool(self.random_mask and self.random_mask(sid))
            )
            row = rows.get(rec.module)
            if row is None:
                row = rows[rec.module] = dict.fromkeys(CATEGORIES, 0)
            row[cat] += rec.nbytes
        return rows, alive

    def _forget(self, rec: _Record) -> None:
        """A saved storage died (its graph was dropped): it is no longer held for backward."""
        if self._records.get(rec.sid) is rec:
            del self._records[rec.sid]

    def clear(self) -> None:
        self._records.clear()
        self._names.clear()
        self._seen_seq.clear()
        self._exclude_refs.clear()


def _keep(t: torch.Tensor) -> torch.Tensor:
    """What the graph keeps for a saved tensor: the tensor itself, unless it is an output of the
    node saving it -- then a detached alias, or node -> tensor -> grad_fn -> node would be a
    reference cycle autograd cannot free (saved_tensors_hooks' warning). Inputs and leaves are kept
    as they are, as autograd keeps them without hooks; skipping their ``detach`` matters under
    FakeTensorMode, where it is a dispatched operator."""
    fn = t.grad_fn
    if fn is not None and fn._sequence_nr() == _next_sequence_nr() - 1:
        return t.detach()
    return t


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t
