"""Memory budgets, and ``assert_memory`` for tests.

Sizes are read by ``memprof.units.parse_bytes`` (``"1.2 GiB"``); ``check_budget(memory, {"peak": ...})``
lists what went over;
``assert_memory(model, batch, saved_activations="1.2 GiB")`` runs one training step of ``model`` on
``batch`` under ``memprof.track`` and raises AssertionError with a readable table of the excess.
The pytest fixture ``memprof_budget`` (``memprof.checks.pytest_plugin``) is the same check around a step
you write yourself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from memprof.errors import MemprofError
from memprof.results.result import Memory, Result
from memprof.units import METRICS, format_bytes, parse_bytes, short_repr


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


class BudgetExceeded(AssertionError):
    """A measured step went over its budget; the message is the table of ``format_excess``."""


def _track() -> Callable[..., Any]:
    """``memprof.track``, looked up at call time so tests can stand a stub in for it."""
    from memprof.instrument import session

    return session.track


@contextmanager
def budget(
    model: Any,
    optimizer: Any = None,
    *,
    title: str = "",
    on_result: Callable[[Result], None] | None = None,
    **budgets: Any,
) -> Iterator[Any]:
    """Run the block under ``memprof.track(model, optimizer)``; on leaving it, fail if over budget.

    Yields the tracker (``prof.result`` is the Result once the block ends); ``on_result`` is called
    with it before the check. Raises BudgetExceeded (an AssertionError) with one line per budgeted
    metric (budget, measured, excess) when anything exceeded its budget; an exception raised inside
    the block propagates unchanged and nothing is checked. The one budget check: ``assert_memory``
    and the pytest fixture ``memprof_budget`` both run it.
    """
    limits = parse_budgets(budgets)
    with _track()(model, optimizer) as prof:
        yield prof
    result: Result = prof.result
    if on_result is not None:
        on_result(result)
    over = check_budget(result.memory, limits)
    if over:
        raise BudgetExceeded(format_excess(over, result.memory, limits, title))


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
        MemprofError: for an unknown metric, an unreadable size (negative, not finite, above
            ``memprof.units.MAX_BYTES``, a fraction of a byte), a loss_fn that is not callable, a
            model or optimizer that is not torch's, an output without a loss, or when called
            inside a ``memprof.track`` block (measurements do not nest).

    Example::

        memprof.assert_memory(model, batch, saved_activations="1.2 GiB", peak="3 GiB")
    """
    limits = parse_budgets(budgets)  # validate before running anything
    if loss_fn is not None and not callable(loss_fn):
        raise MemprofError(
            f"assert_memory loss_fn={short_repr(loss_fn)} ({type(loss_fn).__name__}) is not callable; pass a "
            "function of the model output, e.g. loss_fn=lambda out: out.logits.sum(), or leave it out for output.loss"
        )
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
