"""Bad input to the Python API fails closed: a MemprofError naming the value, the constraint and the
fix, raised before anything runs, never a raw TypeError/AttributeError/OverflowError from deep
inside, and never a result that is silently wrong.

1. ``ProfileConfig`` / ``memprof.profile``: every field's type, checked before any lookup.
2. Sizes (``parse_bytes``, budgets): finite, at least 0, at most ``MAX_BYTES``, whole bytes.
3. Nested measurements (``track``, ``assert_memory``, ``memprof_budget``, ``memprof.profile``).
4. Reusing a tracker or an Instrument.
5. The fake engine's batch is real: a batch this host cannot hold is a MemprofError, not ``oom``.
6. The sequence-length fix names ``seq_len=`` (Python) and ``--seq-len`` (CLI).
"""

import json
import pathlib
import sys

import numpy as np
import pytest
import torch
from torch import nn

import memprof
from memprof import engines
from memprof.checks.budget import parse_budgets
from memprof.engines import fake
from memprof.engines.config import ProfileConfig
from memprof.errors import MemprofError
from memprof.instrument.session import Instrument
from memprof.models import tasks
from memprof.units import MAX_BYTES, parse_bytes

F32 = 4
# An OPT small enough for the fake engine to profile in a fraction of a second: 32 positions.
TINY_OPT = dict(
    model_type="opt",
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    ffn_dim=32,
    word_embed_proj_dim=16,
    max_position_embeddings=32,
    vocab_size=64,
    pad_token_id=1,
    bos_token_id=2,
    eos_token_id=2,
    enable_bias=True,
    do_layer_norm_before=True,
)
# Linear(64, 64) -> ReLU -> Linear(64, 64) on x of (32, 64) fp32 saves x and the ReLU output (the
# second Linear's input is that same storage): 2 * 32 * 64 * 4 bytes.
SAVED = 2 * 32 * 64 * F32


@pytest.fixture(scope="module")
def tiny_opt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fail-closed") / "tiny-opt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_OPT))
    return str(folder)


class Counted(nn.Sequential):
    """The MLP above, counting its forward calls (to show that a refused call ran nothing)."""

    def __init__(self):
        torch.manual_seed(0)
        super().__init__(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


@pytest.fixture
def mlp():
    return Counted(), torch.randn(32, 64)


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# -- 1. ProfileConfig: types first, every field -----------------------------------------------------


def test_profile_none_names_the_backbone_and_the_fix():
    with pytest.raises(MemprofError) as exc:
        memprof.profile(None)
    assert one_line(exc) == (
        "backbone=None (NoneType) is not a str or path; pass a registry name such as backbone='bert-base' "
        "(`memprof backbones` lists them), or a path to a config.json or model folder"
    )


WRONG_TYPES = [
    ("backbone", 5),
    ("backbone", b"bert-base"),
    ("backbone", ["bert-base"]),
    ("method", None),
    ("method", 3),
    ("method", ["ft", "lora"]),
    ("engine", None),
    ("engine", 1),
    ("target", 5),
    ("target", b"cuda"),
    ("dtype", None),
    ("dtype", torch.float32),
    ("attn", None),
    ("attn", True),
    ("task", 1),
    ("task", ("classification",)),
    ("seq_len", 8.0),
    ("seq_len", "8"),
    ("seq_len", True),
    ("seq_len", None),
    ("seq_len", 8.5),
    ("batch_size", 8.0),
    ("batch_size", "8"),
    ("batch_size", False),
    ("batch_size", None),
    ("seed", 0.0),
    ("seed", "0"),
    ("seed", True),
    ("seed", None),
]
EXAMPLES = {
    "backbone": "backbone='bert-base'",
    "method": "method='lora'",
    "engine": "engine='fake'",
    "target": "target='cuda'",
    "dtype": "dtype='bf16'",
    "attn": "attn='sdpa'",
    "task": "task='classification'",
    "seq_len": "seq_len=512",
    "batch_size": "batch_size=8",
    "seed": "seed=0",
}


@pytest.mark.parametrize("field, value", WRONG_TYPES, ids=[f"{f}={v!r}" for f, v in WRONG_TYPES])
def test_every_field_rejects_a_wrong_type_before_any_lookup(field, value):
    # The other fields name things that do not exist: a type error must be reported first.
    kwargs = dict(backbone="no-such-backbone", method="no-such-method", dtype="fp8")
    kwargs[field] = value
    with pytest.raises(MemprofError) as exc:
        ProfileConfig(**kwargs)
    text = one_line(exc)
    assert text.startswith(f"{field}={value!r} ({type(value).__name__}) is not "), text
    assert (
        f"pass e.g. {EXAMPLES[field]}" in text
        or f"pass an int, e.g. {EXAMPLES[field]}" in text
        or f"such as {EXAMPLES[field]}" in text
    ), text


def test_whole_number_messages_are_exact():
    with pytest.raises(MemprofError) as exc:
        memprof.profile("bert-base", seq_len="8")
    assert one_line(exc) == "seq_len='8' (str) is not a whole number (sequence length); pass an int, e.g. seq_len=512"
    with pytest.raises(MemprofError) as exc:
        memprof.profile("bert-base", batch_size=True)
    assert one_line(exc) == "batch_size=True (bool) is not a whole number (batch size); pass an int, e.g. batch_size=8"
    with pytest.raises(MemprofError) as exc:
        memprof.profile("bert-base", dtype=torch.bfloat16)
    assert one_line(exc) == (
        "dtype=torch.bfloat16 (dtype) is not a dtype name: it must be a str; pass e.g. dtype='bf16'"
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(backbone=""), "backbone='' is empty; pass a registry name such as backbone='bert-base'"),
        (dict(backbone="  "), "backbone='  ' is empty;"),
        (
            dict(seq_len=0),
            "sequence length 0 must be a whole number of at least 1; pass e.g. seq_len=512 "
            "(--seq-len 512 on the command line)",
        ),
        (
            dict(batch_size=-2),
            "batch size -2 must be a whole number of at least 1; pass e.g. batch_size=8 "
            "(--batch-size 8 on the command line)",
        ),
        (dict(seed=-1), "seed -1 is outside 0 to 2**64 - 1 (what torch.manual_seed takes); pass e.g. seed=0"),
        (dict(seed=2**64), f"seed {2**64} is outside 0 to 2**64 - 1"),
    ],
)
def test_values_out_of_range(kwargs, message):
    with pytest.raises(MemprofError) as exc:
        ProfileConfig(**{"backbone": "bert-base", **kwargs})
    assert one_line(exc).startswith(message)


def test_paths_and_integer_types_are_accepted(tiny_opt):
    by_path = ProfileConfig(pathlib.Path(tiny_opt), seq_len=np.int64(16), batch_size=np.int32(2), seed=np.uint8(3))
    by_str = ProfileConfig(tiny_opt, seq_len=16, batch_size=2, seed=3)
    assert by_path == by_str and by_path.backbone == "tiny-opt"
    assert [type(v) for v in (by_path.seq_len, by_path.batch_size, by_path.seed)] == [int, int, int]


# -- 2. sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, message",
    [
        ("1e400", "budget peak '1e400' is too large a size; a size is at most 2**63 - 1 bytes (8 EiB)"),
        ("1e999999999 TiB", "budget peak '1e999999999 TiB' is too large a size"),
        (str(2**63), f"budget peak '{2**63}' is too large a size"),
        (2**63, f"budget peak {2**63} is too large a size"),
        (10**30, "budget peak 1000000000000000000000000000000 is too large a size"),
        ("9000 PiB", "budget peak '9000 PiB' is not a size"),
        ("nan", "budget peak 'nan' is not a finite size; pass bytes or a string such as '1.2 GiB'"),
        ("inf", "budget peak 'inf' is not a finite size"),
        ("-inf GiB", "budget peak '-inf GiB' is not a finite size"),
        (float("nan"), "budget peak nan is not a finite size"),
        (float("inf"), "budget peak inf is not a finite size"),
        ("-1 GiB", "budget peak '-1 GiB' is a negative size; a size is at least 0 bytes"),
        (-1, "budget peak -1 is a negative size"),
        (-0.5, "budget peak -0.5 is a negative size"),
        (
            "1e-3 B",
            "budget peak '1e-3 B' is a fraction of one byte; a size is a whole number of bytes: pass 0 or at least 1 B",
        ),
        ("1e-99999999", "budget peak '1e-99999999' is a fraction of one byte"),
        (0.4, "budget peak 0.4 is a fraction of one byte"),
        ("0.6", "budget peak '0.6' is a fraction of one byte"),
        (None, "budget peak None is not a size"),
        ([1], "budget peak [1] is not a size"),
    ],
)
def test_assert_memory_rejects_sizes_that_are_not_sizes(mlp, size, message):
    model, x = mlp
    with pytest.raises(MemprofError) as exc:
        memprof.assert_memory(model, x, loss_fn=lambda out: out.sum(), peak=size)
    assert one_line(exc).startswith(message), one_line(exc)
    assert model.calls == 0  # refused before the step ran


@pytest.mark.parametrize(
    "size, n",
    [
        ("1.2 GiB", 1288490189),  # 1.2 * 2**30 = 1288490188.8, to the nearest byte
        ("9007199254740993", 2**53 + 1),  # read exactly: a float would say 2**53
        (str(MAX_BYTES), MAX_BYTES),
        (MAX_BYTES, MAX_BYTES),
        ("8 EB".replace("E", "T"), 8 * 1000**4),
        ("0.5 KiB", 512),
        ("1.5", 2),
        ("2.5 B", 2),
        ("1.6", 2),  # rounded half to even, like round()
        (0.0, 0),
        ("0e5", 0),
        (np.int64(7), 7),
        (np.float32(3.0), 3),
    ],
)
def test_sizes_read_exactly_and_round_to_whole_bytes(size, n):
    assert parse_bytes(size) == n


def test_parse_budgets_names_the_budget():
    with pytest.raises(MemprofError, match=r"^budget saved_activations 'nan' is not a finite size"):
        parse_budgets({"peak": "1 GiB", "saved_activations": "nan"})


# -- 3. nested measurements ---------------------------------------------------------------------------


NESTED = "memprof.track is already measuring a step; nested tracking is not supported: "


def test_nested_track_is_refused_and_never_silently_wrong(mlp):
    model, x = mlp
    with pytest.raises(MemprofError) as exc:
        with memprof.track(model) as outer:
            with memprof.track(model):
                model(x).sum().backward()
    assert one_line(exc) == (
        NESTED + "memprof.track cannot start inside it, as saved-tensor hooks nest and the outer measurement would "
        "miss what the inner one sees; end the outer block first and measure the steps one after the other "
        "(assert_memory and the memprof_budget fixture run memprof.track too)"
    )
    assert outer.result is None  # no result rather than a wrong one (it reported 0 saved bytes)
    assert model.calls == 0
    # Nothing is left behind: the next measurement is whole.
    model.zero_grad(set_to_none=True)
    with memprof.track(model) as prof:
        model(x).sum().backward()
    assert prof.result.memory.saved_activations == SAVED


def test_measurements_one_after_the_other_are_fine(mlp):
    model, x = mlp
    results = []
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        with memprof.track(model) as prof:
            model(x).sum().backward()
        results.append(prof.result.memory)
    assert results[0] == results[1] and results[0].saved_activations == SAVED


def test_assert_memory_inside_track_is_refused(mlp):
    model, x = mlp
    with pytest.raises(MemprofError, match="^" + NESTED.replace(".", r"\.") + r"memprof\.track cannot start"):
        with memprof.track(model) as outer:
            memprof.assert_memory(model, x, loss_fn=lambda out: out.sum(), saved_activations="1 GiB")
    assert outer.result is None and model.calls == 0


def test_budget_fixture_inside_track_is_refused(mlp, memprof_budget):
    model, x = mlp
    with pytest.raises(MemprofError, match="^" + NESTED.replace(".", r"\.")):
        with memprof.track(model) as outer:
            with memprof_budget(model, saved_activations="1 GiB"):
                model(x).sum().backward()
    assert outer.result is None and model.calls == 0 and memprof_budget.results == []


def test_track_inside_the_budget_fixture_is_refused(mlp, memprof_budget):
    model, x = mlp
    with pytest.raises(MemprofError, match="^" + NESTED.replace(".", r"\.")):
        with memprof_budget(model, saved_activations="1 GiB"):
            with memprof.track(model):
                model(x).sum().backward()
    assert memprof_budget.results == []


def test_profile_inside_track_is_refused_before_building(mlp, tiny_opt, monkeypatch):
    model, x = mlp
    monkeypatch.setattr(fake, "build", lambda config: pytest.fail("built a model inside a track block"))
    with pytest.raises(MemprofError) as exc:
        with memprof.track(model) as outer:
            memprof.profile(tiny_opt, seq_len=8, batch_size=1)
    assert one_line(exc).startswith(NESTED + "memprof.profile cannot start inside it")
    assert outer.result is None


def test_nested_instruments_are_refused(mlp):
    model, x = mlp
    outer, inner = Instrument(model), Instrument(model)
    with pytest.raises(MemprofError, match="^memprof Instrument is already measuring a step; nested tracking"):
        with outer:
            with inner:
                pass
    assert outer.measurement is None and inner.state == "new"


# -- 4. reusing a tracker -----------------------------------------------------------------------------


def test_entering_the_same_track_twice(mlp):
    # It used to raise AttributeError: '_GeneratorContextManager' object has no attribute 'args'.
    model, x = mlp
    tracker = memprof.track(model)
    with tracker as prof:
        model(x).sum().backward()
    first = prof.result
    assert first.memory.saved_activations == SAVED
    with pytest.raises(MemprofError) as exc:
        with tracker:
            model(x).sum().backward()
    assert one_line(exc) == (
        "this memprof.track(...) was already used for a step and cannot be entered again; one tracker measures "
        "one step: call memprof.track(model, optimizer) anew for each step"
    )
    assert prof.result is first and model.calls == 1


def test_entering_the_same_track_inside_itself(mlp):
    model, x = mlp
    tracker = memprof.track(model)
    with pytest.raises(MemprofError, match="^" + NESTED.replace(".", r"\.")):
        with tracker:
            with tracker:
                pass
    assert tracker.result is None


def test_tracking_again_after_a_step_that_raised(mlp):
    model, x = mlp
    with pytest.raises(KeyError):
        with memprof.track(model) as failed:
            model(x)
            raise KeyError("mid-step")
    assert failed.result is None
    model.zero_grad(set_to_none=True)
    with memprof.track(model) as prof:
        model(x).sum().backward()
    assert prof.result.memory.saved_activations == SAVED


def test_an_instrument_measures_one_step(mlp):
    model, x = mlp
    inst = Instrument(model)
    with pytest.raises(MemprofError) as exc:
        inst.begin_forward(x)  # used to be AttributeError: 'NoneType' object has no attribute 'recording'
    assert one_line(exc) == (
        "Instrument.begin_forward() was called before its with block; the phases of a step "
        "are marked inside `with Instrument(model, optimizer) as inst:`"
    )
    with inst:
        inst.begin_forward(x)
        loss = model(x).sum()
        inst.begin_backward(loss)
        loss.backward()
        inst.end()
    assert inst.measurement.memory.saved_activations == SAVED
    first = inst.measurement
    # Entering it again used to measure a second step into the first one's timeline (its
    # parameters counted twice); now it is refused and the first measurement stands.
    with pytest.raises(MemprofError, match="^this memprof Instrument was already used for a step"):
        with inst:
            pass
    with pytest.raises(MemprofError, match=r"^Instrument\.end\(\) was called after its with block ended"):
        inst.end()
    assert inst.measurement is first


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda m, x: memprof.track(None),
            "memprof.track needs a torch.nn.Module to measure, got model=None (NoneType)",
        ),
        (
            lambda m, x: memprof.track(m, "adamw"),
            "memprof.track: optimizer='adamw' (str) is not a torch.optim.Optimizer; pass the optimizer",
        ),
        (lambda m, x: memprof.track(m, name=5), "memprof.track name=5 (int) is not a str"),
        (
            lambda m, x: memprof.assert_memory(m, x, loss_fn=5, peak="1 GiB"),
            "assert_memory loss_fn=5 (int) is not callable",
        ),
        (
            lambda m, x: memprof.assert_memory(m, x, optimizer=object(), loss_fn=lambda o: o.sum(), peak="1 GiB"),
            "memprof.track: optimizer=<object object",
        ),
        (
            lambda m, x: memprof.assert_memory(m.state_dict(), x, peak="1 GiB"),
            "memprof.track needs a torch.nn.Module to measure, got model=OrderedDict([('0.weight', tensor(",
        ),
    ],
)
def test_track_arguments_are_checked_before_running(mlp, call, message):
    model, x = mlp
    with pytest.raises(MemprofError) as exc:
        call(model, x)
    assert one_line(exc).startswith(message), one_line(exc)
    assert len(one_line(exc)) < 300  # a state dict passed by mistake is quoted in a few words
    assert model.calls == 0


# -- 5. the fake engine's batch is built on this machine -----------------------------------------------


def test_batch_too_large_for_this_host_is_an_error_not_oom(tiny_opt):
    # 2**40 x 16 tokens: torch.randint used to fail to allocate 128 TiB, and the result said "oom".
    with pytest.raises(MemprofError) as exc:
        memprof.profile(tiny_opt, seq_len=16, batch_size=2**40)
    text = one_line(exc)
    assert text.startswith(
        "the fake engine builds the token batch on this machine: batch size 1099511627776 x sequence length 16 "
        "needs about 768 TiB of host memory and this machine has "
    ), text
    assert text.endswith(
        "available; pass a smaller batch_size / --batch-size or seq_len / --seq-len "
        "(the device it models is not the limit)"
    )


def test_host_limit_is_checked_against_available_memory(tiny_opt, monkeypatch):
    config = ProfileConfig(tiny_opt, seq_len=16, batch_size=2)
    assert fake.host_batch_bytes(config) == 2 * 16 * 6 * 8  # ids, mask, labels and as much again, int64
    monkeypatch.setattr(fake, "available_host_memory", lambda: 2 * 16 * 48 - 1)
    with pytest.raises(MemprofError, match="needs about 1.50 KiB of host memory and this machine has 1.50 KiB "):
        engines.run(config)
    monkeypatch.setattr(fake, "available_host_memory", lambda: 2 * 16 * 48)
    assert engines.run(config).status == "ok"


@pytest.mark.parametrize(
    "failure",
    [
        MemoryError(),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to "
            "allocate 140737488355328 bytes. Error code 12 (Cannot allocate memory)"
        ),
    ],
)
def test_an_allocation_failing_on_the_host_is_an_error_not_oom(tiny_opt, monkeypatch, failure):
    def make_batch(*args, **kwargs):
        raise failure

    monkeypatch.setattr(tasks, "make_batch", make_batch)
    with pytest.raises(MemprofError) as exc:
        memprof.profile(tiny_opt, seq_len=16, batch_size=2)
    assert one_line(exc).startswith(
        "the fake engine builds the token batch on this machine: batch size 2 x sequence length 16 needs about "
        f"1.50 KiB of host memory and allocating it failed ({type(failure).__name__}: this machine's memory is the "
        "limit); pass a smaller batch_size"
    )
    assert isinstance(exc.value.__cause__, type(failure))


def test_any_host_allocation_failure_in_the_fake_step_is_an_error(tiny_opt, monkeypatch):
    def run(built, config):
        raise MemoryError()

    monkeypatch.setattr(fake.ENGINE, "run", run)
    with pytest.raises(MemprofError, match=r"allocating it failed \(MemoryError"):
        memprof.profile(tiny_opt, seq_len=16, batch_size=2)


def test_other_errors_in_the_fake_batch_propagate(tiny_opt, monkeypatch):
    def make_batch(*args, **kwargs):
        raise RuntimeError("a bug, not memory")

    monkeypatch.setattr(tasks, "make_batch", make_batch)
    with pytest.raises(RuntimeError, match="a bug, not memory"):
        memprof.profile(tiny_opt, seq_len=16, batch_size=2)


# -- 6. the sequence-length fix names the argument -----------------------------------------------------


def test_seq_len_above_positions_names_the_python_argument_and_the_flag(tiny_opt):
    with pytest.raises(MemprofError) as exc:
        memprof.profile(tiny_opt, seq_len=33, batch_size=1)
    assert one_line(exc) == (
        "sequence length 33 exceeds tiny-opt's maximum of 32 positions; pass seq_len=32 or less "
        "(--seq-len 32 on the command line)"
    )
    assert memprof.profile(tiny_opt, seq_len=32, batch_size=1).status == "ok"


def test_seq_len_above_positions_on_the_command_line(monkeypatch, capsys):
    from memprof.cli.app import run

    monkeypatch.setattr(sys, "argv", ["memprof", "profile", "--backbone", "bert-base", "--seq-len", "4096"])
    with pytest.raises(SystemExit) as exc:
        run()
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2
    assert err.endswith(
        "sequence length 4096 exceeds bert-base's maximum of 512 positions; pass seq_len=512 or less "
        "(--seq-len 512 on the command line)"
    ), err
