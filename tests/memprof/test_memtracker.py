"""PyTorch's MemTracker (``torch.distributed._tools.mem_tracker``) as a second reference: on the very same
cpu-engine step of a small BERT, ``ft`` and ``lora``, the peak, the parameters and the live activations
agree with memprof's to the byte, and so does the split at the peak once each MemTracker category is
mapped onto memprof's (``benchmarks/memtracker_check.py``, NOTE [ What MemTracker calls what ]); the
issue's goal was 2%. Where the split differs (a peak inside backward) the test names the bytes.
Stock MemTracker cannot run a model with frozen parameters (NOTE [ MemTracker and frozen
parameters ]): that is asserted, and LoRA is compared with the one-line workaround."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch.distributed._tools.mem_tracker")

from memprof.engines import run  # noqa: E402
from memprof.engines.config import ProfileConfig  # noqa: E402
from memprof.models import backbones  # noqa: E402
from memprof.models.tasks import NUM_LABELS  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "memtracker_check", Path(__file__).parents[2] / "benchmarks" / "memtracker_check.py"
)
check_script = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = check_script  # dataclasses look their module up there
_spec.loader.exec_module(check_script)
MemTracker, FrozenAwareMemTracker = check_script.MemTracker, check_script.FrozenAwareMemTracker
ACT, OTHER, OPT, TEMP, GRAD, PARAM, BUFFER, TOTAL = (
    check_script.ACT,
    check_script.OTHER,
    check_script.OPT,
    check_script.TEMP,
    check_script.GRAD,
    check_script.PARAM,
    check_script.BUFFER,
    check_script.TOTAL,
)
B, S, H, FFN, F32, I64 = 4, 16, 32, 64, 4, 8
TRACKERS = {"ft": MemTracker, "lora": FrozenAwareMemTracker}
#: vocabulary -> what dominates ft's first step: the activations (its peak falls inside backward) or
#: the word embeddings with their gradient and AdamW state (its peak falls inside optimizer.step())
VOCABS = {"activation-heavy": 128, "embedding-heavy": 8192}


@pytest.fixture(scope="module")
def small_bert(tmp_path_factory):
    """kind -> bert-base's config at two layers of width 32: a real fp32 step in well under a second."""
    root = tmp_path_factory.mktemp("small-bert")
    paths = {}
    for kind, vocab in VOCABS.items():
        path = root / f"{kind}.json"
        path.write_text(
            json.dumps(
                {
                    **backbones.builtin()["bert-base"],
                    "hidden_size": H,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 2,
                    "intermediate_size": FFN,
                    "vocab_size": vocab,
                    "max_position_embeddings": 32,
                }
            )
        )
        paths[kind] = str(path)
    return paths


_CHECKS = {}


def checked(small_bert, kind, method):
    """One step measured by both (once per test session)."""
    if (kind, method) not in _CHECKS:
        config = ProfileConfig(small_bert[kind], method, S, B, engine="cpu")
        _CHECKS[kind, method] = check_script.measure(config, TRACKERS[method])
    return _CHECKS[kind, method]


def rows(check):
    return {figure: (ours, theirs) for figure, ours, theirs in check_script.mapped(check)}


@pytest.mark.filterwarnings("ignore:global module forward hook")  # torch says its hook failed: the error below
@pytest.mark.parametrize("method", ["lora", "adapter", "meft1"])
def test_stock_memtracker_raises_on_a_model_with_frozen_parameters(small_bert, method):
    with pytest.raises(RuntimeError, match=r"^cannot register a hook on a tensor that doesn't require gradient$"):
        check_script.measure(ProfileConfig(small_bert["activation-heavy"], method, S, B, engine="cpu"), MemTracker)


@pytest.mark.parametrize("method", ["ft", "lora"])
def test_memtracker_does_not_change_what_memprof_measures(small_bert, method):
    # Both dispatch modes see the same step; memprof alone (the cpu engine) measures the same bytes.
    alone = run(ProfileConfig(small_bert["activation-heavy"], method, S, B, engine="cpu")).memory
    assert checked(small_bert, "activation-heavy", method).measurement.memory == alone


@pytest.mark.parametrize("kind", VOCABS)
@pytest.mark.parametrize("method", ["ft", "lora"])
def test_peak_parameters_and_live_activations_agree_with_memtracker(small_bert, kind, method):
    check = checked(small_bert, kind, method)
    found = rows(check)
    for figure in ("peak", "parameters and buffers", "live activations when backward starts"):
        assert found[figure][0] == found[figure][1], figure
    # No recomputation in ft or lora: the most activation bytes live at once are those at backward's start.
    assert check.measurement.memory.peak_activations == check.measurement.live.forward_end_activations


@pytest.mark.parametrize("method", ["ft+ckpt", "lora+ckpt", "adapter", "meft1"])
def test_the_other_methods_peak_and_live_activations_agree_too(small_bert, method):
    # Beyond the ft and lora (frozen models through the workaround). The split at a peak inside a
    # recomputation is not compared: MemTracker labels all a recomputed region allocates Activation.
    tracker = MemTracker if method == "ft+ckpt" else FrozenAwareMemTracker
    check = check_script.measure(ProfileConfig(small_bert["activation-heavy"], method, S, B, engine="cpu"), tracker)
    found = rows(check)
    for figure in ("peak", "parameters and buffers", "live activations when backward starts"):
        assert found[figure][0] == found[figure][1], figure


def test_ft_peak_in_the_optimizer_step_splits_the_same(small_bert):
    check = checked(small_bert, "embedding-heavy", "ft")
    m, p = check.measurement.memory, check.peak
    assert check.peak_phase == "optimizer"
    assert all(ours == theirs for ours, theirs in rows(check).values())
    assert p[GRAD] == p[PARAM] and p[TEMP] == 0  # every gradient alive, backward's temporaries gone
    # All AdamW allocates in step() is "Optstate" to MemTracker. To memprof, its state: two copies of every
    # parameter and a one-element fp32 step count per parameter tensor (embeddings 5, each layer 16, pooler
    # and classifier 2 each); and its temporaries: the peak is at the word embeddings' update (the largest),
    # where the single-tensor AdamW holds sqrt(exp_avg_sq) and its quotient by the bias correction at once.
    tensors = 5 + 2 * 16 + 2 + 2
    assert m.optimizer_state == 2 * p[PARAM] + tensors * F32
    assert m.temporaries == 2 * VOCABS["embedding-heavy"] * H * F32
    assert p[OPT] == m.optimizer_state + m.temporaries
    # Alive besides: the batch (Other to MemTracker, activations to memprof) and the fp32 loss.
    assert p[OTHER] == check.batch_bytes == 2 * B * S * I64 + B * I64
    assert m.activations_at_peak == p[OTHER] + p[ACT] == check.batch_bytes + F32


def test_ft_peak_inside_backward_differs_by_gradients_in_flight_and_the_seed(small_bert):
    check = checked(small_bert, "activation-heavy", "ft")
    m, p = check.measurement.memory, check.peak
    assert check.peak_phase == "backward"
    # The peak falls in the top layer's output.dense backward: its weight and bias gradients exist but
    # are not yet accumulated into .grad. MemTracker relabels a gradient when it is accumulated (its
    # hooks), so they are still Temp; memprof labels a storage by what it ends as, .grad, from its birth.
    accumulated = ((H * NUM_LABELS + NUM_LABELS) + (H * H + H) + 2 * H) * F32  # classifier, pooler, top LayerNorm
    in_flight = (H * FFN + H) * F32
    assert p[GRAD] == accumulated and m.gradients == accumulated + in_flight
    # loss.backward()'s seed (a one-element fp32 ones) is made before autograd's engine starts: Activation to
    # MemTracker, a backward temporary to memprof. Nothing else differs.
    seed = F32
    assert p[ACT] + p[OTHER] == m.activations_at_peak + seed
    assert p[TEMP] == m.temporaries - seed + in_flight


@pytest.mark.parametrize("kind", VOCABS)
def test_lora_peak_in_the_forward_splits_the_same(small_bert, kind):
    check = checked(small_bert, kind, "lora")
    m, p = check.measurement.memory, check.peak
    assert check.peak_phase == "forward"
    assert all(ours == theirs for ours, theirs in rows(check).values())
    assert m.gradients == p[GRAD] == 0 and m.optimizer_state == p[OPT] == 0
    # MemTracker's Activation is all the forward has allocated and not yet freed; memprof splits it into
    # activations (alive when backward starts) and temporaries (freed before).
    assert m.temporaries > 0
    assert m.activations_at_peak + m.temporaries == p[ACT] + p[OTHER]


@pytest.mark.parametrize("method", ["ft", "lora"])
def test_live_activations_after_the_forward_differ_only_by_the_output_the_step_drops(small_bert, method):
    check = checked(small_bert, "activation-heavy", method)
    live, b, post = check.measurement.live, check.backward_start, check.post_forward
    # As the model's forward returns, MemTracker also counts its output, the (B, labels) fp32 logits, which
    # the step (``model(**batch).loss``) lets go before backward starts.
    logits = B * NUM_LABELS * F32
    assert post[ACT] + post[OTHER] == live.forward_end_activations + logits
    assert b[TOTAL] == post[TOTAL] - logits
