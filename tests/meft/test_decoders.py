"""Pre-LayerNorm decoders (Llama, Qwen2, Mistral, GPT-2): the family's blocks are the original layer,
reversible gradients equal ordinary backprop (float arithmetic in float64, exact arithmetic bit for bit
in fp32 and bf16), generate() decodes with the KV cache, and configs the family cannot convert fail
with one line.

The tiny models (meft_testing.DECODERS) use grouped-query attention (4 heads, 2 key/value heads),
rotary positions, sliding-window masks (Qwen2, Mistral) and every dropout their family has.
"""

from __future__ import annotations

import pytest
import torch
from meft_testing import BATCH, DECODERS, SEQ, batch_for, check_float64_gradients, raises_one_line, tiny_model

import meft
import meft.reversible
from meft.convert import stacks

CASES = tuple(DECODERS)
CAUSAL_LM = tuple(c for c in CASES if c.endswith("causal-lm"))
VARIANTS = ("meft1", "meft2", "meft3")
EXACT_DEPTH = 4  # float arithmetic in bf16 loses its 8-bit mantissa within one layer (docs/MEFT.md, "Exact arithmetic")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and immune to OpenMP contention on a busy machine
    (as tests/memprof/conftest.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _padded(case: str) -> dict[str, torch.Tensor]:
    """batch_for(case) with the first row left-padded by two tokens, so the attention mask has work to do."""
    batch = batch_for(case)
    batch["attention_mask"][0, :2] = 0
    batch["input_ids"][0, :2] = 0  # the pad token
    return batch


@pytest.mark.parametrize("case", CAUSAL_LM)
def test_the_familys_blocks_compose_to_the_original_layer(case):
    # feed_forward(attention(h)) with a zero adapter is each layer bit for bit, fed with what the
    # model's loop passes (causal or sliding-window mask with padding, rotary cos/sin, GQA).
    model = meft.convert(tiny_model(case, dtype=torch.float32), meft.MEFTConfig(init_std=0.0)).eval()
    stack = stacks(model)[0][1]
    seen = []
    stack.register_forward_pre_hook(lambda m, args, kwargs: seen.append((args, kwargs)), with_kwargs=True)
    with torch.no_grad():
        model(**_padded(case), use_cache=False)
        ((args, kwargs),) = seen
        hidden, call = stack.bind(args, kwargs)
        assert call["attention_mask"].shape == (BATCH, 1, SEQ, SEQ)  # the mask is a tensor input of the Function
        if not case.startswith("gpt2"):
            assert call["rope_cos"].shape == call["rope_sin"].shape == (1, SEQ, 8)  # so are cos and sin
            attn = stack.base_layers[0].self_attn
            assert attn.k_proj.out_features == attn.q_proj.out_features // 2  # grouped-query attention
        zero = stack.adapters[0]["ffn"]
        for layer in stack.base_layers:
            expected = layer(hidden, *args[1:], **kwargs)  # (B, T, H)
            hidden = stack.kind.feed_forward(layer, stack.kind.attention(layer, hidden, call), call, zero)
            assert torch.equal(hidden, expected)


def check_gradients(case: str, config: meft.MEFTConfig, **model_kwargs) -> None:
    """Same loss, and every trainable parameter's gradient non-zero and within 1e-10 of ordinary backprop's (float64)."""
    check_float64_gradients(case, config, tolerance=1e-10, every_one_reached=True, **model_kwargs)


FLOAT_CASES = [(case, {"variant": v}) for case in CASES for v in VARIANTS] + [
    ("llama-causal-lm", {"variant": "meft1", "num_rev_layers": 1}),
    ("gpt2-cls", {"variant": "meft2", "merge": "mean"}),
    ("qwen2-cls", {"variant": "meft3", "num_rev_layers": 1}),
]


@pytest.mark.matrix(
    keep=lambda p: (
        p["case"] == CASES[0] or p["kwargs"] != {"variant": p["kwargs"]["variant"]} or p["kwargs"]["variant"] == "meft1"
    )
)
@pytest.mark.parametrize(
    ("case", "kwargs"), FLOAT_CASES, ids=[f"{c}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for c, kw in FLOAT_CASES]
)
def test_float_reversible_gradients_equal_ordinary_backprop_in_float64(case, kwargs):
    check_gradients(case, meft.MEFTConfig(arithmetic="float", **kwargs))


@pytest.mark.parametrize("case", ["llama-causal-lm", "gpt2-cls"])
def test_sdpa_attention_with_dropout_gives_the_same_gradients(case):
    # sdpa draws its dropout mask inside the kernel, and without padding gets no mask tensor at all.
    check_gradients(case, meft.MEFTConfig(variant="meft2", arithmetic="float"), attn="sdpa")


@pytest.mark.matrix(keep=lambda p: p["case"] == CASES[0] or p["variant"] == "meft1")
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", CASES)
def test_exact_reversible_backprop_is_bit_for_bit_in_fp32_and_bf16(case, variant):
    batch = batch_for(case)
    if case.endswith("cls"):  # equal labels: the head's gradient cannot cancel to exactly 0 in bf16
        batch["labels"] = torch.ones_like(batch["labels"])
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(1)
        model = meft.convert(
            tiny_model(case, dtype=dtype, num_hidden_layers=EXACT_DEPTH), meft.MEFTConfig(variant=variant)
        )
        report = meft.gradient_fidelity(model, batch)
        ((_, stack),) = stacks(model)
        assert report.arithmetic == "exact"
        assert len(report.layers) == stack.reversible_layers == EXACT_DEPTH - stack.cache_top
        assert all(r.max_abs == 0 for r in report.layers), dtype  # every layer's input came back bit for bit
        assert report.missing == []
        assert report.worst_relative_error == 0, dtype  # the very same gradient bits as ordinary backprop


def test_float_arithmetic_fails_the_same_check():
    # The check above can fail: in bf16 the paper's float inverse loses the low bits within a layer.
    torch.manual_seed(1)
    model = tiny_model("llama-causal-lm", dtype=torch.bfloat16, num_hidden_layers=EXACT_DEPTH)
    report = meft.gradient_fidelity(
        meft.convert(model, meft.MEFTConfig(arithmetic="float")), batch_for("llama-causal-lm")
    )
    assert report.arithmetic == "float"
    assert report.layers[0].max_abs > 0 and report.worst_relative_error > 0


@pytest.mark.parametrize("case", CASES)
def test_only_adapters_and_score_are_trainable_and_lm_heads_stay_frozen(case):
    for variant in VARIANTS:
        model = meft.convert(tiny_model(case), meft.MEFTConfig(variant=variant))
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        head = {n for n in trainable if n.startswith("score.")}
        assert trainable == head | {n for n in trainable if ".adapters." in n}
        assert bool(head) == case.endswith("cls")
        assert set(meft.trained_parameters(model)) == trainable
        out = model.get_output_embeddings()
        assert out is None or not out.weight.requires_grad  # the tied LM head is the embedding: frozen
        # every layer reversible: the top layer keeps its graph only when asked (MEFTConfig.cache_top_layer)
        ((_, stack),) = stacks(model)
        assert not stack.cache_top and stack.reversible_layers == len(stack.base_layers)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", CAUSAL_LM)
def test_generate_decodes_greedily_with_the_kv_cache(case, variant, function_calls):
    # Each layer's attention runs once per eval forward, so its KV cache fills as in the original
    # model. It need not generate the original model's tokens, even with zero adapters:
    # lam * x1 (and beta * x2) stay in the streams, so its starting point is near the PLM, not at it.
    model = tiny_model(case, dtype=torch.float32)
    torch.manual_seed(1)
    meft.convert(model, meft.MEFTConfig(variant=variant, init_std=0.5)).eval()  # large adapters: they matter
    new = 4
    options = dict(max_new_tokens=new, do_sample=False, eos_token_id=None)  # no early stop: every row is full
    for batch in (batch_for(case), _padded(case)):
        cached = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **options)
        assert cached.shape == (BATCH, SEQ + new)
        assert torch.equal(
            cached,
            model.generate(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False, **options
            ),
        )
    ids = batch_for(case)["input_ids"]
    with torch.no_grad():  # greedy decoding by hand, unpadded: the argmax of a full forward, token by token
        for _ in range(new):
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(model.generate(input_ids=batch_for(case)["input_ids"], **options), ids)
    assert function_calls == []  # eval and no_grad: the plain forward, nothing kept for backward


def _decoder(case: str, **overrides):
    return lambda: meft.convert(tiny_model(case, **overrides), meft.MEFTConfig())


ERRORS = {
    # HF builds this model and fails only in its first forward, inside the attention
    "kv heads not dividing heads": (
        _decoder("llama-causal-lm", num_key_value_heads=3),
        ["num_key_value_heads=3", "num_attention_heads=4", "divisor of 4"],
    ),
    "mistral kv heads": (_decoder("mistral-cls", num_key_value_heads=3), ["num_key_value_heads=3"]),
    "qwen2 mixed layer types": (
        _decoder("qwen2-causal-lm", max_window_layers=1),
        ["full_attention, sliding_attention", "use_sliding_window=False"],
    ),
    "gpt2 cross-attention": (
        _decoder("gpt2-causal-lm", add_cross_attention=True),
        ["add_cross_attention=True", "set add_cross_attention=False"],
    ),
    "num_rev_layers above depth": (
        lambda: meft.convert(tiny_model("llama-cls"), meft.MEFTConfig(num_rev_layers=3)),
        ["num_rev_layers=3", "decoder", "<= 2"],
    ),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_errors_are_one_line_with_value_constraint_and_fix(name):
    raises_one_line(*ERRORS[name])


def test_every_decoder_family_is_supported():
    assert {"llama", "qwen2", "mistral", "gpt2"} <= set(meft.SUPPORTED)
    assert {tiny_model(case).config.model_type for case in CASES} == {"llama", "qwen2", "mistral", "gpt2"}
