"""Bugs the rest of the suite let through: ``fit`` without its default context allowance, and a budget
check with slack. Each expected number is a real measurement or written out by hand (2**30, not
``fit.CONTEXT_ALLOWANCE``, so a changed constant fails too)."""

import json

import pytest
import torch
from torch import nn

import memprof
from memprof.checks.budget import BudgetExceeded, assert_memory, budget
from memprof.errors import MemprofError
from memprof.fit import search as fit
from memprof.fit.search import FitConfig
from memprof.units import HEADLINE_METRICS

GIB = 2**30  # the documented default context allowance (docs/usage.md "What fits", NOTE [ What fit counts ])
BUDGET = 400_000  # bytes left for the step: batch sizes around 5 to 12 at sequence length 16 (as test_fit.py)


# -- fit: the default context allowance ---------------------------------------------------------------


@pytest.fixture(scope="module")
def without_context(tiny_opt):
    """ft's answer when the whole of BUDGET is the step's: context 0, given explicitly."""
    (a,) = fit.fit(FitConfig(tiny_opt, ["ft"], BUDGET, seq_len=16, context=0))
    assert 0 < a.value and a.limit == "budget"
    return a


def test_fit_counts_one_gib_of_context_unless_told_otherwise(tiny_opt, without_context):
    config = FitConfig(tiny_opt, ["ft"], GIB + BUDGET, seq_len=16)
    assert config.context == GIB
    (a,) = fit.fit(config)
    # the same step peaks; required = step + margin + 1 GiB, so the extra GiB of budget buys nothing
    assert a.value == without_context.value and a.at.step == without_context.at.step
    assert a.at.required == without_context.at.required + GIB == a.at.step + a.at.margin + GIB
    assert a.to_dict()["memory"]["context"] == GIB
    assert a.over.required == without_context.over.required + GIB > GIB + BUDGET


def test_fit_refuses_a_budget_below_the_default_context(tiny_opt):
    # the weights (23.6 KiB) fit BUDGET alone, not with 1 GiB of context on top
    with pytest.raises(MemprofError, match=r"plus the context allowance \(1\.00 GiB\)"):
        fit.fit(FitConfig(tiny_opt, ["ft"], BUDGET, seq_len=16))


def test_cli_fit_counts_one_gib_of_context_unless_told_otherwise(cli, tiny_opt, tmp_path, without_context):
    code, out, err = cli("fit", "--backbone", tiny_opt, "--methods", "ft", "--budget", str(BUDGET), "--seq-len", "16")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "plus the context allowance (1.00 GiB)" in err
    code, out, err = cli(
        "fit",
        "--backbone",
        tiny_opt,
        "--methods",
        "ft",
        "--budget",
        str(GIB + BUDGET),
        "--seq-len",
        "16",
        "--json",
        tmp_path / "fit.json",
    )
    assert code == 0, err
    doc = json.loads((tmp_path / "fit.json").read_text())
    (d,) = doc["methods"]
    assert (doc["context"], d["max_batch_size"]) == (GIB, without_context.value)
    assert d["memory"]["required"] == without_context.at.required + GIB


# -- budgets: exactly at passes, one byte over fails --------------------------------------------------


def step():
    """Linear(64, 64) -> ReLU -> Linear(64, 64) on x of (32, 64), with SGD: a real, repeatable step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    return model, torch.optim.SGD(model.parameters(), lr=0.1), torch.randn(32, 64)


def run(model, opt, x):
    model(x).sum().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


@pytest.fixture(scope="module")
def measured():
    model, opt, x = step()
    with memprof.track(model, opt) as prof:
        run(model, opt, x)
    m = prof.result.memory
    assert m.saved_activations == 2 * 32 * 64 * 4  # x and the ReLU output: the tracker is the real one
    return {metric: getattr(m, metric) for metric in HEADLINE_METRICS}


@pytest.mark.parametrize("metric", HEADLINE_METRICS)
def test_budget_exactly_at_the_measurement_passes_and_one_byte_below_fails(measured, metric):
    model, opt, x = step()
    with budget(model, opt, **{metric: measured[metric]}) as prof:
        run(model, opt, x)
    assert getattr(prof.result.memory, metric) == measured[metric]
    model, opt, x = step()
    with pytest.raises(BudgetExceeded) as exc:
        with budget(model, opt, **{metric: measured[metric] - 1}):
            run(model, opt, x)
    assert str(exc.value).splitlines()[0] == f"memory budget exceeded: {metric} over budget"
    assert "+1 B " in str(exc.value)


def test_assert_memory_at_and_one_byte_over():
    model, opt, x = step()  # assert_memory's own step: its loss (output.float().sum()) is not run()'s
    m = assert_memory(model, x, optimizer=opt, peak="1 GiB").memory
    measured = {metric: getattr(m, metric) for metric in HEADLINE_METRICS}
    model, opt, x = step()
    assert assert_memory(model, x, optimizer=opt, **measured).memory == m
    for metric in HEADLINE_METRICS:
        model, opt, x = step()
        with pytest.raises(AssertionError, match=f"^assert_memory: {metric} over budget"):
            assert_memory(model, x, optimizer=opt, **{**measured, metric: measured[metric] - 1})


def test_fixture_at_and_one_byte_over(memprof_budget, measured):
    model, opt, x = step()
    with memprof_budget(model, opt, **measured):
        run(model, opt, x)
    model, opt, x = step()
    with pytest.raises(pytest.fail.Exception, match="peak over budget"):
        with memprof_budget(model, opt, peak=measured["peak"] - 1):
            run(model, opt, x)
