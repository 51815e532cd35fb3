"""Memory budgets: byte sizes as people write them, and ``assert_memory`` for tests.

``parse_bytes("1.2 GiB")`` reads a size; ``check_budget(memory, {"peak": ...})`` lists what went over;
``assert_memory(model, batch, saved_activations="1.2 GiB")`` runs one training step of ``model`` on
``batch`` under ``memprof.track`` and raises AssertionError with a readable table of the excess.
The pytest fixture ``memprof_budget`` (``memprof.pytest_plugin``) is the same check around a step
you write yourself.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterator, Mapping

from memprof.errors import MemprofError
from memprof.result import Memory, Result

#: Units a size may carry: decimal (kB, MB, GB, TB: powers of 1000) and binary (KiB .. TiB: 1024).
UNITS = {
    "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")

#: Memory fields a budget (or the gate) can name: the byte counts of ``memprof.result.Memory``.
METRICS = tuple(f.name for f in fields(Memory))


def parse_bytes(value: str | int | float, *, what: str = "size") -> int:
    """A byte count from ``1.2 GiB``, ``800MB``, ``512 KiB``, ``4096`` or an int.

    Units are case-insensitive; KB/MB/GB/TB are powers of 1000 and KiB/MiB/GiB/TiB powers of 1024.
    A number without a unit is bytes. Raises MemprofError, naming ``what``, for anything else.
    """
    if isinstance(value, bool):
        raise MemprofError(f"{what} {value!r} is not a size; pass bytes or a string such as '1.2 GiB'")
    if isinstance(value, (int, float)):
        if value < 0 or value != value or value == float("inf"):
            raise MemprofError(f"{what} {value!r} must be a finite number of bytes of at least 0")
        return int(round(value))
    if not isinstance(value, str):
        raise MemprofError(f"{what} {value!r} is not a size; pass bytes or a string such as '1.2 GiB'")
    match = _SIZE.match(value)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in UNITS and unit:
        raise MemprofError(
            f"{what} {value!r} is not a size; write a number and one of the units "
            "B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. '1.2 GiB'"
        )
    return int(round(float(match.group(1)) * UNITS[unit or "b"]))


def format_bytes(n: int | float | None) -> str:
    """``1288490189`` -> ``1.20 GiB``; binary units, three significant digits; None -> ``-``."""
    if n is None:
        return "-"
    sign, n = ("-" if n < 0 else ""), abs(n)
    if n < 1024:
        return f"{sign}{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{sign}{n:.0f} {unit}" if n >= 100 else f"{sign}{n:.1f} {unit}" if n >= 10 else f"{sign}{n:.2f} {unit}"
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Excess:
    """One metric over its budget."""

    metric: str
    budget: int
    measured: int

    @property
    def excess(self) -> int:
        return self.measured - self.budget


def parse_budgets(budgets: Mapping[str, Any]) -> dict[str, int]:
    """Validate ``{metric: size}``: metrics are Memory fields, sizes go through ``parse_bytes``."""
    if not budgets:
        raise MemprofError(f"no budget given; pass at least one of {', '.join(METRICS)}, e.g. peak='3 GiB'")
    out = {}
    for metric, size in budgets.items():
        if metric not in METRICS:
            raise MemprofError(f"unknown budget {metric!r}; use one of {', '.join(METRICS)}")
        out[metric] = parse_bytes(size, what=f"budget {metric}")
    return out


def check_budget(memory: Memory, budgets: Mapping[str, int]) -> list[Excess]:
    """The metrics of ``memory`` above their budget (a metric the engine did not measure fails too)."""
    over = []
    for metric, budget in budgets.items():
        measured = getattr(memory, metric)
        if measured is None:
            raise MemprofError(f"budget {metric!r} cannot be checked: this measurement has no {metric} (CUDA only)")
        if measured > budget:
            over.append(Excess(metric, budget, int(measured)))
    return over


def format_excess(over: list[Excess], memory: Memory, budgets: Mapping[str, int], title: str = "") -> str:
    """A fixed-width table of every budgeted metric (budget, measured, excess), the ones over marked."""
    by_metric = {e.metric: e for e in over}
    rows = [("metric", "budget", "measured", "excess")]
    for metric, limit in budgets.items():
        e = by_metric.get(metric)
        excess = f"+{format_bytes(e.excess)} ({e.excess / max(e.budget, 1):+.1%})" if e else "within"
        rows.append((metric, format_bytes(limit), format_bytes(getattr(memory, metric)), excess))
    w = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"{title or 'memory budget exceeded'}: {', '.join(e.metric for e in over)} over budget"]
    for row in rows:
        line = f"  {row[0]:<{w[0]}}  {row[1]:>{w[1]}}  {row[2]:>{w[2]}}  {row[3]:<{w[3]}}"
        lines.append((line + "  <-- over") if row[0] in by_metric else line.rstrip())
    return "\n".join(lines)


def _track() -> Callable[..., Any]:
    """``memprof.track``, looked up at call time so tests can stand a stub in for it."""
    import memprof

    return memprof.track


@contextmanager
def budget(model: Any, optimizer: Any = None, *, title: str = "", **budgets: Any) -> Iterator[Any]:
    """Run the block under ``memprof.track(model, optimizer)``; on leaving it, fail if over budget.

    Yields the tracker (``prof.result`` is the Result once the block ends). Raises AssertionError
    with one line per budgeted metric (budget, measured, excess) when anything exceeded its budget;
    an exception raised inside the block propagates unchanged and nothing is checked.
    """
    limits = parse_budgets(budgets)
    with _track()(model, optimizer) as prof:
        yield prof
    result: Result = prof.result
    over = check_budget(result.memory, limits)
    if over:
        raise AssertionError(format_excess(over, result.memory, limits, title))


def _loss(output: Any, loss_fn: Callable[[Any], Any] | None) -> Any:
    import torch

    if loss_fn is not None:
        return loss_fn(output)
    loss = getattr(output, "loss", None)
    if loss is None and isinstance(output, Mapping):
        loss = output.get("loss")
    if loss is None and isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        output = output[0]
    if loss is None and isinstance(output, torch.Tensor):
        loss = output if output.dim() == 0 else output.float().sum()
    if loss is None:
        raise MemprofError(
            f"cannot find a loss in the model output ({type(output).__name__}); put labels in the batch "
            "so the model returns .loss, or pass loss_fn=lambda out: ..."
        )
    return loss


def assert_memory(
    model: Any,
    batch: Any,
    *,
    optimizer: Any = None,
    loss_fn: Callable[[Any], Any] | None = None,
    **budgets: Any,
) -> Result:
    """Run one training step of ``model`` on ``batch`` and assert it stays within the budgets.

    The step is: forward (``model(**batch)`` for a mapping, ``model(*batch)`` for a tuple or list,
    ``model(batch)`` otherwise), the loss (``loss_fn(output)``, else ``output.loss``, else the
    output itself, summed), backward, then ``optimizer.step()`` and ``zero_grad()`` if an optimizer
    is given; all of it under ``memprof.track(model, optimizer)``.

    Budgets are keyword arguments named after ``memprof.Memory`` fields, as bytes or sizes such as
    ``"1.2 GiB"`` or ``"800MB"``. Returns the measured Result when everything fits.

    Raises:
        AssertionError: listing each budgeted metric with its budget, measurement and excess.
        MemprofError: for an unknown metric, an unreadable size or an output without a loss.

    Example::

        memprof.assert_memory(model, batch, saved_activations="1.2 GiB", peak="3 GiB")
    """
    limits = parse_budgets(budgets)  # validate before running anything
    with budget(model, optimizer, title="assert_memory", **limits) as prof:
        if isinstance(batch, Mapping):
            output = model(**batch)
        elif isinstance(batch, (tuple, list)):
            output = model(*batch)
        else:
            output = model(batch)
        _loss(output, loss_fn).backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return prof.result
