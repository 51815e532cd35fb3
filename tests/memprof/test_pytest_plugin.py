"""The ``memprof_budget`` fixture (through the pytest11 entry point) and ``assert_memory``.

Each test runs twice: with a small stand-in tracker that counts the unique non-parameter storages
saved for backward (so the numbers are known by hand), and with the real ``memprof.track`` when it
is available.
"""

import pytest
import torch
import torch._dynamo  # noqa: F401  (see below)
from torch import nn

from memprof.checks.budget import assert_memory
from memprof.errors import MemprofError
from memprof.instrument import session
from memprof.results.result import Memory, Result

pytest_plugins = ["pytester"]
# pytester's in-process runs drop the modules first imported inside them; torch's optimizers import
# torch._dynamo lazily, and importing it a second time registers its test operators twice. Importing
# it here keeps it out of those runs.

# Linear(64, 64) -> ReLU -> Linear(64, 64) on x of (32, 64) fp32 saves x and the ReLU output (the
# second Linear's input is that same storage): 2 * 32 * 64 * 4 bytes.
SAVED = 2 * 32 * 64 * 4  # 16 KiB


class StubTrack:
    """``memprof.track``'s interface: saved_activations = unique saved storages, parameters excluded."""

    def __init__(self, model, optimizer=None):
        self.model, self.saved, self.result = model, {}, None

    def __enter__(self):
        params = {p.untyped_storage().data_ptr() for p in self.model.parameters()}

        def pack(t):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in params:
                self.saved[ptr] = t.untyped_storage().nbytes()
            return t

        self._hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        total = sum(self.saved.values())
        self.result = Result(
            backbone="user-model",
            method="custom",
            engine="cpu",
            target="cpu",
            dtype="fp32",
            attn_implementation="",
            seq_len=0,
            batch_size=0,
            memory=Memory(saved_activations=total, peak_activations=total, peak=total),
        )
        return False


@pytest.fixture(params=["stub", "real"])
def tracker(request, monkeypatch):
    if request.param == "stub":
        monkeypatch.setattr(session, "track", StubTrack)
    return request.param


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))


INNER = """
import torch
from torch import nn


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64)), torch.randn(32, 64)


def test_budget_too_small(memprof_budget):
    model, x = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with memprof_budget(model, opt, saved_activations="4 KiB", peak="1 GiB"):
        model(x).sum().backward()
        opt.step()


def test_budget_big_enough(memprof_budget):
    model, x = mlp()
    with memprof_budget(model, saved_activations="1 MiB") as prof:
        model(x).sum().backward()
    assert prof.result.memory.saved_activations <= 2**20
    assert len(memprof_budget.results) == 1
"""


def test_fixture_fails_a_small_budget_and_passes_a_big_one(pytester, tracker):
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_budget_too_small*",
            "memory budget exceeded: saved_activations over budget",
            "  metric  * budget * measured * excess",
            "  saved_activations * 4.00 KiB * <-- over",
            "  peak * 1.00 GiB * within",
        ]
    )
    if tracker == "stub":
        result.stdout.fnmatch_lines(["  saved_activations  4.00 KiB  16.0 KiB  +12.0 KiB (+300.0%)  <-- over"])
    assert "Traceback" not in result.stdout.str()  # pytrace=False: the diff, not the plugin's frames


def test_fixture_lets_errors_inside_the_block_through(pytester, tracker):
    pytester.makepyfile(
        test_inner="""
def test_error(memprof_budget):
    import torch
    with memprof_budget(torch.nn.Linear(2, 2), peak="1 KiB"):
        raise KeyError("from the user")
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*KeyError: 'from the user'*"])
    assert "budget exceeded" not in result.stdout.str()


def test_assert_memory_raises_a_readable_diff(tracker):
    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = mlp()

        def forward(self, x, labels):
            return {"loss": nn.functional.cross_entropy(self.body(x), labels)}

    torch.manual_seed(0)
    batch = {"x": torch.randn(32, 64), "labels": torch.randint(0, 64, (32,))}
    with pytest.raises(AssertionError) as exc:
        assert_memory(Classifier(), batch, saved_activations="4 KiB")
    lines = str(exc.value).split("\n")
    assert lines[0] == "assert_memory: saved_activations over budget"
    assert lines[2].split()[:2] == ["saved_activations", "4.00"] and lines[2].endswith("<-- over")
    result = assert_memory(Classifier(), batch, saved_activations="1 MiB", peak="1 GiB")
    assert 0 < result.memory.saved_activations <= 2**20


def test_assert_memory_measures_the_step(monkeypatch):
    monkeypatch.setattr(session, "track", StubTrack)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model[0].weight.detach().clone()
    result = assert_memory(model, (torch.randn(32, 64),), optimizer=opt, saved_activations=SAVED)  # exactly fits
    assert result.memory.saved_activations == SAVED
    assert not torch.equal(model[0].weight, before) and model[0].weight.grad is None  # stepped, grads cleared
    assert (
        assert_memory(
            model, torch.randn(32, 64), loss_fn=lambda out: out.pow(2).mean(), saved_activations=SAVED + 32 * 64 * 4
        ).memory.saved_activations
        > SAVED
    )  # pow saves its input


def test_assert_memory_bad_input(monkeypatch):
    monkeypatch.setattr(session, "track", StubTrack)
    with pytest.raises(MemprofError, match="unknown budget 'peek'"):
        assert_memory(mlp(), torch.randn(2, 64), peek="1 GiB")
    with pytest.raises(MemprofError, match=r"budget peak '3 G' is not a size"):
        assert_memory(mlp(), torch.randn(2, 64), peak="3 G")
    with pytest.raises(MemprofError, match="cannot find a loss in the model output"):
        assert_memory(nn.Identity(), {"input": "text"}, peak="1 GiB")
