"""``step="steady"``: a step with AdamW's state resident from its first operator (NOTE [ First and
steady steps ]), recorded in the result, in the API, ``profile`` and ``compare``."""

import pytest
import torch

import memprof
import memprof.engines.common
import memprof.engines.config
from memprof.engines.common import create_optimizer_state
from memprof.errors import MemprofError
from memprof.results.result import load_results
from memprof.sweep.grid import Grid


def test_steady_state_holds_adamws_state_throughout(tiny_opt):
    first = memprof.profile(tiny_opt, "ft", seq_len=16, batch_size=8)
    steady = memprof.profile(tiny_opt, "ft", seq_len=16, batch_size=8, step="steady")
    assert (first.step, steady.step) == ("first", "steady")
    # By hand: every parameter of ft trains; AdamW keeps exp_avg and exp_avg_sq (fp32, 4 bytes an
    # element, as the parameter) and a 4-byte fp32 scalar ``step`` per parameter tensor.
    model = memprof.engines.common.build(memprof.engines.config.ProfileConfig(tiny_opt, seq_len=16), "meta").model
    params = [p for p in model.parameters() if p.requires_grad]
    state = sum(2 * 4 * p.numel() + 4 for p in params)
    assert steady.memory.optimizer_state == state and steady.trainable_params == sum(p.numel() for p in params)
    # At batch 8 the first step's peak comes before AdamW creates anything (in backward); the steady
    # step holds the whole state there. (At batch 2 the first step peaks in AdamW's step instead.)
    assert first.memory.optimizer_state == 0
    assert steady.memory.peak == first.memory.peak + state
    assert steady.memory.saved_activations == first.memory.saved_activations
    assert steady.layers.equals(first.layers)


def test_lora_steady_state_is_the_adapters_state_only(tiny_opt):
    steady = memprof.profile(tiny_opt, "lora", seq_len=16, batch_size=2, dtype="bf16", step="steady")
    model = memprof.engines.common.build(
        memprof.engines.config.ProfileConfig(tiny_opt, "lora", seq_len=16, dtype="bf16"), "meta"
    ).model
    params = [p for p in model.parameters() if p.requires_grad]
    # Moments in each trainable parameter's dtype, no fp32 master copy, a 4-byte step each. peft keeps
    # LoRA's weights in fp32 over a bf16 model (autocast_adapter_dtype), so here they are fp32.
    assert {p.dtype for p in params} == {torch.float32}
    assert steady.memory.optimizer_state == sum(2 * 4 * p.numel() + 4 for p in params)
    assert steady.memory.parameters == model_bytes(model)


def model_bytes(model) -> int:
    return sum(
        t.numel() * t.element_size() for t in {id(t): t for t in [*model.parameters(), *model.buffers()]}.values()
    )


def test_creating_the_state_moves_no_weight():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    create_optimizer_state(model, opt)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters()) and opt.param_groups[0]["lr"] == 0.1
    for p in model.parameters():
        st = opt.state[p]
        assert torch.equal(st["exp_avg"], torch.zeros_like(p)) and torch.equal(st["exp_avg_sq"], torch.zeros_like(p))
        assert float(st["step"]) == 1.0


def test_the_cpu_engine_steps_steady_too(tiny_opt):
    first = memprof.profile(tiny_opt, "lora", seq_len=8, batch_size=2, engine="cpu")
    steady = memprof.profile(tiny_opt, "lora", seq_len=8, batch_size=2, engine="cpu", step="steady")
    assert steady.memory.optimizer_state > 0 == first.memory.optimizer_state
    assert steady.memory.saved_activations == first.memory.saved_activations


def test_step_is_validated():
    with pytest.raises(MemprofError, match="unknown step 'last'; use one of first, steady"):
        memprof.profile("bert-base", step="last")
    with pytest.raises(MemprofError, match=r"step=1 \(int\) is not a step name"):
        memprof.profile("bert-base", step=1)


def test_profile_cli_records_the_step(cli, tiny_opt, tmp_path):
    code, out, err = cli(
        "profile",
        "--backbone",
        tiny_opt,
        "--seq-len",
        "8",
        "--batch-size",
        "2",
        "--step",
        "steady",
        "--json",
        tmp_path / "r.json",
    )
    assert code == 0, err
    assert "| steady step |" in out
    (r,) = load_results(tmp_path / "r.json").results
    assert r.step == "steady" and r.key[-2:] == ("steady", "full")
    code, out, err = cli("profile", "--backbone", tiny_opt, "--seq-len", "8", "--step", "second")
    assert code == 2 and err.strip().splitlines() == [
        "error: unknown step 'second'; use one of first, steady (--step steady profiles a step with the optimizer "
        "state already resident)"
    ]


def test_compare_sweeps_the_step():
    grid = Grid(backbone="bert-base", methods=["ft"], seq_lens=[128], batch_sizes=[2], step="steady")
    assert [c.step for c in grid.configs()] == ["steady"]
    assert grid.options()["step"] == "steady" and grid.command().endswith("--step steady")
    assert Grid.from_options(grid.options()) == grid
    assert Grid.from_options({k: v for k, v in grid.options().items() if k != "step"}).step == "first"
