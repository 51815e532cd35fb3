"""pytest plugin: the ``memprof_budget`` fixture (registered through the ``pytest11`` entry point).

Usage::

    def test_step_fits(memprof_budget):
        model, opt = build(), torch.optim.AdamW(...)
        with memprof_budget(model, opt, saved_activations="1.2 GiB", peak="3 GiB"):
            model(**batch).loss.backward()
            opt.step()

When a budgeted metric is exceeded the test fails with one line per metric (budget, measured,
excess); the measurement is also attached to the test report as the user property ``memprof``
(it shows up in ``--junitxml``). Budgets name ``memprof.Memory`` fields and take bytes or sizes
such as ``"800MB"``. This module imports nothing heavy at pytest start-up: torch and memprof's
tracker are loaded only when the fixture is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest


class MemoryBudget:
    """What the ``memprof_budget`` fixture returns: call it to get a budget-checking context."""

    def __init__(self, node: pytest.Item) -> None:
        self._node = node
        #: Every Result measured in this test, in order.
        self.results: list[Any] = []

    @contextmanager
    def __call__(self, model: Any, optimizer: Any = None, **budgets: Any) -> Iterator[Any]:
        from memprof.checks.budget import BudgetExceeded, budget

        try:
            with budget(model, optimizer, title="memory budget exceeded", on_result=self._record, **budgets) as prof:
                yield prof
        except BudgetExceeded as exc:
            pytest.fail(str(exc), pytrace=False)

    def _record(self, result: Any) -> None:
        from memprof.units import HEADLINE_METRICS

        self.results.append(result)
        self._node.user_properties.append(("memprof", {m: getattr(result.memory, m) for m in HEADLINE_METRICS}))


@pytest.fixture
def memprof_budget(request: pytest.FixtureRequest) -> MemoryBudget:
    """``with memprof_budget(model, optimizer=None, peak="3 GiB", ...): <one training step>``."""
    return MemoryBudget(request.node)
