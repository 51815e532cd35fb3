"""The engine interface: every engine in the table answers it, and a new engine is one module plus
one table entry (a dummy engine registered here is validated, run and failed like the others)."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
import torch

from memprof import engines
from memprof.engines import common, engine_named, engine_names
from memprof.engines.base import Engine, Step
from memprof.engines.config import TARGETS, ProfileConfig
from memprof.errors import MemprofError
from memprof.results.result import ALWAYS_MEASURED, CUDA_ONLY_METRICS


@pytest.mark.parametrize("name", engine_names())
def test_every_engine_in_the_table_has_the_interface(name):
    engine = engine_named(name)
    assert isinstance(engine, Engine) and engine.name == name
    assert engine.targets and set(engine.targets) <= set(TARGETS)
    assert all(isinstance(v, bool) for v in (engine.allocates, engine.traceable, engine.timed, engine.models_target))
    assert set(engine.measures) | set(engine.may_measure) <= set(CUDA_ONLY_METRICS)
    assert not set(engine.measures) & set(engine.may_measure)
    # A reader of results (the gate) finds the same in the results layer, without loading an engine.
    assert ALWAYS_MEASURED.get(name, ()) == engine.measures


def test_the_results_name_no_engine_the_table_lacks():
    assert set(ALWAYS_MEASURED) <= set(engine_names())


def test_the_engines_properties():
    fake, cpu, cuda = (engine_named(n) for n in ("fake", "cpu", "cuda"))
    assert (fake.targets, cpu.targets, cuda.targets) == (("cuda", "cpu"), ("cpu",), ("cuda",))
    assert [e.allocates for e in (fake, cpu, cuda)] == [False, True, True]
    assert [e.traceable for e in (fake, cpu, cuda)] == [True, False, False]
    assert [e.timed for e in (fake, cpu, cuda)] == [False, True, True]
    assert cuda.measures + cuda.may_measure == CUDA_ONLY_METRICS and not fake.measures and not cpu.measures
    assert fake.unavailable() is None and cpu.unavailable() is None
    assert (cuda.unavailable() is None) == torch.cuda.is_available()


def test_an_unknown_engine_names_the_table():
    with pytest.raises(MemprofError, match=r"^unknown engine 'tpu'; use one of fake, cpu, cuda$"):
        engine_named("tpu")
    assert not engines.traceable("tpu")


def test_importing_the_configuration_loads_no_engine():
    code = (
        "import sys, memprof.engines.config\n"
        "print(sorted(m for m in ('fake', 'cpu', 'cuda') if 'memprof.engines.' + m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_method_profiled_throughout_imports_no_symbolic_machinery(tiny_opt):
    # the gate's methods (two sizes each, fewer than a trace is worth) derive nothing, so they do not
    # pay the second of imports the symbolic trace costs
    code = (
        "import sys\n"
        "from memprof.engines.config import ProfileConfig\n"
        "from memprof.sweep.closed_form import ClosedFormRunner\n"
        f"c = ProfileConfig({tiny_opt!r}, engine='fake', batch_size=2, seq_len=8, step='steady')\n"
        "r = ClosedFormRunner([c], out_dir='unused')(c)\n"
        "print(r.status, 'memprof.engines.symbolic' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["ok", "False"]


# -- a new engine: one module, one table entry -------------------------------------------------


class DummyEngine(Engine):
    """A real step on the CPU under another name, untimed, with a cleanup that is counted."""

    name = "dummy"
    targets = ("cpu",)
    allocates = True
    timed = False
    cleanups = 0

    def build(self, config: ProfileConfig) -> common.Built:
        return common.build(config, "cpu")

    def cleanup(self) -> None:
        self.cleanups += 1


class AbsentEngine(DummyEngine):
    name = "absent"

    def unavailable(self) -> str | None:
        return "engine 'absent' needs a device this machine lacks; use engine='fake'"


@pytest.fixture
def dummy(monkeypatch):
    """DummyEngine and AbsentEngine registered as a module would register them: ENGINE, one entry each."""
    registered = {}
    for engine in (DummyEngine(), AbsentEngine()):
        module = types.ModuleType(f"memprof_test_{engine.name}_engine")
        module.ENGINE = registered[engine.name] = engine
        monkeypatch.setitem(sys.modules, module.__name__, module)
        monkeypatch.setitem(engines.ENGINE_MODULES, engine.name, module.__name__)
    return registered


def test_a_registered_engine_is_validated_like_the_others(dummy, tiny_opt):
    config = ProfileConfig(tiny_opt, engine="dummy", seq_len=8, batch_size=2)
    assert config.target == "cpu"  # its first target, as the default
    with pytest.raises(MemprofError, match=r"^target 'cuda' differs from engine 'dummy'; "):
        ProfileConfig(tiny_opt, engine="dummy", target="cuda", seq_len=8)
    with pytest.raises(MemprofError, match=r"^engine 'absent' needs a device this machine lacks"):
        ProfileConfig(tiny_opt, engine="absent", seq_len=8)
    assert engine_named("dummy") is dummy["dummy"] and "dummy" in engine_names()


def test_a_registered_engine_runs_the_shared_step(dummy, tiny_opt):
    result = engines.run(ProfileConfig(tiny_opt, engine="dummy", seq_len=8, batch_size=2))
    cpu = engines.run(ProfileConfig(tiny_opt, engine="cpu", seq_len=8, batch_size=2))
    assert (result.status, result.engine, result.target, result.step_time_s) == ("ok", "dummy", "cpu", None)
    # The same step as the cpu engine's (NOTE [ One step, every engine ]): the same bytes.
    assert result.memory == cpu.memory and result.attn_implementation == cpu.attn_implementation


def test_a_registered_engine_that_allocates_runs_out_of_memory_as_a_result(dummy, tiny_opt, monkeypatch):
    def out_of_memory(self):
        raise torch.OutOfMemoryError("out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Step, "batch", out_of_memory)
    result = engines.run(ProfileConfig(tiny_opt, engine="dummy", seq_len=8, batch_size=2))
    assert (result.status, result.engine) == ("oom", "dummy") and "Tried to allocate 2.00 GiB" in result.message
    assert dummy["dummy"].cleanups == 1


def test_an_engine_that_allocates_nothing_meets_the_host_limit(dummy, tiny_opt, monkeypatch):
    def host_out_of_memory(self):
        raise MemoryError()

    monkeypatch.setattr(DummyEngine, "allocates", False)
    monkeypatch.setattr(Step, "batch", host_out_of_memory)
    with pytest.raises(MemprofError, match=r"^engine 'dummy' allocates nothing on the device it models") as exc:
        engines.run(ProfileConfig(tiny_opt, engine="dummy", seq_len=8, batch_size=2))
    assert isinstance(exc.value.__cause__, MemoryError) and dummy["dummy"].cleanups == 0


def test_the_cuda_step_reads_the_device_around_the_shared_step(tiny_opt, monkeypatch):
    """The cuda engine's hooks in the shared step's order, checked without a GPU: a CPU model,
    torch.cuda's calls recorded, the device's figures stubbed."""
    from memprof.engines import cuda

    calls = []
    stubs = {
        "synchronize": None,
        "reset_peak_memory_stats": None,
        "max_memory_allocated": 10,
        "max_memory_reserved": 20,
        "get_device_name": "Stub GPU",
    }
    for name, value in stubs.items():
        monkeypatch.setattr(torch.cuda, name, lambda device=None, name=name, value=value: calls.append(name) or value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "nvml_used", lambda device: calls.append("nvml_used") or 30)
    config = ProfileConfig(tiny_opt, engine="cuda", seq_len=8, batch_size=2, step="steady")
    result = cuda.ENGINE.run(common.build(config, "cpu"), config)
    # Peaks reset once the optimizer state exists; the clock between two waits; NVML after a third.
    assert calls == [
        "synchronize",
        "reset_peak_memory_stats",
        "synchronize",
        "synchronize",
        "synchronize",
        "nvml_used",
        "max_memory_allocated",
        "max_memory_reserved",
        "get_device_name",
    ]
    memory = result.memory
    assert (memory.cuda_max_allocated, memory.cuda_max_reserved, memory.nvml_used) == (10, 20, 30)
    assert result.environment["device"] == "Stub GPU" and result.step_time_s > 0
    cpu = engines.run(ProfileConfig(tiny_opt, engine="cpu", seq_len=8, batch_size=2, step="steady"))
    assert (memory.saved_activations, memory.optimizer_state) == (
        cpu.memory.saved_activations,
        cpu.memory.optimizer_state,
    )


@pytest.mark.parametrize("target", ["cuda", "cpu"])  # AdamW's foreach on the cuda target, not on cpu
def test_the_fake_engine_makes_the_optimizer_state_once_per_model_and_measures_as_if_fresh(
    tiny_opt, target, monkeypatch
):
    made = []
    create = common.create_optimizer_state
    monkeypatch.setattr(common, "create_optimizer_state", lambda m, o: made.append(1) or create(m, o))
    sizes = [(2, 8), (3, 16), (2, 8)]
    configs = [
        ProfileConfig(tiny_opt, engine="fake", target=target, batch_size=b, seq_len=s, step="steady") for b, s in sizes
    ]
    first = ProfileConfig(tiny_opt, engine="fake", target=target, batch_size=3, seq_len=16, step="first")
    cache = engines.ModelCache()
    shared = [engines.run(c, cache) for c in [*configs, first]]
    assert len(made) == 1 and cache.builds == 1  # three steady steps of one model: its state made once
    fresh = [engines.run(c, engines.ModelCache()) for c in [*configs, first]]
    assert len(made) == 1 + len(configs)
    for a, b in zip(shared, fresh):
        assert a.memory == b.memory and a.timeline == b.timeline and a.layers.equals(b.layers)
