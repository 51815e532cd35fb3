"""The engines: fake (target cpu) equals cpu byte for byte on every family and method; the kernels
modelled for target cuda save what the hand computes; the model cache; out-of-memory results."""

import json

import pandas as pd
import pytest
import torch

import memprof
from memprof import methods
from memprof.engines import ModelCache, run
from memprof.engines.config import ProfileConfig
from memprof.models import backbones
from memprof.results.result import LAYER_COLUMNS

FAMILIES = ("bert", "roberta", "bart", "opt")
B, S, H, HEADS, FFN, LAYERS = 2, 8, 16, 2, 32, 2
F32 = 4
SHRINK = {
    "bert": dict(
        hidden_size=H,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=32,
    ),
    "roberta": dict(
        hidden_size=H,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=34,
    ),
    "bart": dict(
        d_model=H,
        encoder_layers=LAYERS,
        decoder_layers=LAYERS,
        encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS,
        encoder_ffn_dim=FFN,
        decoder_ffn_dim=FFN,
        max_position_embeddings=32,
    ),
    "opt": dict(
        hidden_size=H,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        ffn_dim=FFN,
        word_embed_proj_dim=H,
        max_position_embeddings=32,
    ),
}
_DECODER = dict(
    hidden_size=H,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    num_key_value_heads=1,
    head_dim=H // HEADS,
    intermediate_size=FFN,
    max_position_embeddings=32,
)
#: the decoders people fine-tune today: fake == cpu for every method, as for the families above
DECODERS = ("llama", "qwen2", "mistral", "gpt2")
SHRINK.update(
    llama=_DECODER,
    qwen2={**_DECODER, "sliding_window": 32, "max_window_layers": LAYERS},
    mistral={**_DECODER, "sliding_window": S // 2},  # shorter than the sequence: a banded mask
    gpt2=dict(n_embd=H, n_layer=LAYERS, n_head=HEADS, n_positions=32, n_ctx=32),
)
BUILTIN = {
    "bert": "bert-base",
    "roberta": "roberta-base",
    "bart": "bart-base",
    "opt": "opt-125m",
    "llama": "llama-3.2-1b",
    "qwen2": "qwen2.5-0.5b",
    "mistral": "mistral-7b",
    "gpt2": "gpt2",
}
#: Reversible stacks per family, bottom-up (BART: encoder, decoder).
STACKS = {"bert": 1, "roberta": 1, "bart": 2, "opt": 1}


def reversible(family: str, method: str) -> tuple[int, ...]:
    """Layers each stack runs through the reversible Function: all (meft's cache_top_layer is off by default)."""
    return (LAYERS,) * STACKS[family]


#: MEFT methods in exact arithmetic, and how many streams each reversible layer scales (and keeps bits of)
EXACT_MEFT = {"meft": 1, "meft1": 1, "meft2": 1, "meft3": 2}
FLOAT_MEFT = ("meft1-float", "meft2-float", "meft3-float")
I64 = 8


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """family -> path of a two-layer, 16-wide config.json of that family (vocabulary 64)."""
    root = tmp_path_factory.mktemp("tiny")
    paths = {}
    for family, name in BUILTIN.items():
        folder = root / f"tiny-{family}"
        folder.mkdir()
        (folder / "config.json").write_text(
            json.dumps({**backbones.builtin()[name], **SHRINK[family], "vocab_size": 64})
        )
        paths[family] = str(folder)
    return paths


_RESULTS: dict = {}
#: (family, method) pairs a method refuses by design: BitFit needs bias terms
REFUSED = {("llama", "bitfit"), ("mistral", "bitfit")}


def profile(tiny, family, method="ft", **kw):
    """Profile a tiny config; each configuration runs once per test session (tests only read results)."""
    key = (tiny[family], method, tuple(sorted(kw.items())))
    if key not in _RESULTS:
        _RESULTS[key] = run(ProfileConfig(tiny[family], method, kw.pop("seq_len", S), kw.pop("batch_size", B), **kw))
    return _RESULTS[key]


def row(result, module):
    rows = result.layers[result.layers["module"] == module]
    assert len(rows) == 1, f"no single row {module!r} in {result.layers['module'].tolist()}"
    return rows.iloc[0]


# -- fake (target cpu) == cpu --------------------------------------------------------------------


def assert_fake_equals_cpu(fake, cpu, family, method):
    """Byte for byte (exact MEFT's reconstruction check runs on fake tensors too; only acting on it
    needs values)."""
    pd.testing.assert_frame_equal(fake.layers, cpu.layers)
    assert fake.memory == cpu.memory


@pytest.mark.matrix(keep=lambda p: p["family"] == "bert" or p["method"] in ("ft", "lora", "meft1"))
@pytest.mark.parametrize("method", methods.names())
@pytest.mark.parametrize("family", FAMILIES + DECODERS)
def test_fake_equals_cpu(tiny, family, method):
    if (family, method) in REFUSED:
        pytest.skip(f"{method} refuses {family} (tests/memprof/test_peft_field.py checks the refusal)")
    fake = profile(tiny, family, method, engine="fake", target="cpu")
    cpu = profile(tiny, family, method, engine="cpu")
    assert fake.memory.saved_activations > 0
    # Not only the hooks' figure: the whole live timeline replays to the same bytes.
    assert_fake_equals_cpu(fake, cpu, family, method)
    assert observable(fake.attn_implementation) == cpu.attn_implementation
    assert (fake.trainable_params, fake.total_params) == (cpu.trainable_params, cpu.total_params)


def observable(kernels: str) -> str:
    """What the cpu engine can see of the fake engine's kernel list: SDPA's math path runs no operator
    of its own, so next to a fused kernel it leaves no trace (LST: its side network's attention and
    the frozen backbone's, run without a graph, can take different kernels)."""
    fused = [k for k in kernels.split("+") if k != "sdpa-math"]
    return "+".join(fused) if fused else kernels


@pytest.mark.matrix(keep=lambda p: p["family"] == "bert" or p["method"] == "meft")
@pytest.mark.parametrize("method", ["ft", "lora+ckpt", "meft", "meft3-float"])  # plain, checkpoint, reversible
@pytest.mark.parametrize(
    "family, dtype", [("bart", "mixed-bf16"), ("llama", "mixed-bf16"), ("gpt2", "bf16"), ("bart", "fp16")]
)  # BART's fp16 layers ask if activations are finite
def test_fake_equals_cpu_under_autocast(tiny, family, dtype, method):
    fake = profile(tiny, family, method, dtype=dtype, engine="fake", target="cpu")
    cpu = profile(tiny, family, method, dtype=dtype, engine="cpu")
    assert_fake_equals_cpu(fake, cpu, family, method)


# -- MEFT's reversible stacks -------------------------------------------------------------------


@pytest.mark.matrix(keep=lambda p: p["family"] == "bert" or p["method"] == "meft1")
@pytest.mark.parametrize("method", [*EXACT_MEFT, *FLOAT_MEFT])
@pytest.mark.parametrize("family", FAMILIES)
def test_reversible_stack_keeps_its_streams_and_the_kept_bits(tiny, family, method):
    r = profile(tiny, family, method, engine="fake", target="cpu")
    stacks = r.layers[r.layers["module"].str.contains("(reversible stack", regex=False)]
    lists = {
        "bert": ["bert.encoder.layer"],
        "roberta": ["roberta.encoder.layer"],
        "bart": ["model.encoder.layers", "model.decoder.layers"],
        "opt": ["model.decoder.layers"],
    }[family]
    counts = [
        f"{LAYERS} layers" if n == LAYERS else f"{n} of {LAYERS} layers reversible" for n in reversible(family, method)
    ]
    assert list(stacks["module"]) == [f"{path} (reversible stack, {n})" for path, n in zip(lists, counts)]
    tokens = B * S * H  # elements of one stream
    stream = I64 if method in EXACT_MEFT else F32  # exact arithmetic: int64 fixed point
    for stack, layers in zip(stacks.to_dict("records"), reversible(family, method)):
        # 4 bits per element of each scaled stream per reversible layer (lam or beta = 13/128), packed 8 elements a
        # byte along the hidden size (float arithmetic keeps none)
        assert stack["reversible_bits"] == layers * EXACT_MEFT.get(method, 0) * B * S * -(-H // 8) * 4
        # the two streams atop the reversible layers, and the layer call's tensors that nothing saved before: OPT's
        # position ids (B, S) int64; for BART's decoder, the encoder's output in exact arithmetic (in
        # float arithmetic it is the encoder stack's top stream, which that stack saved first)
        call = {"opt": B * S * I64}.get(family, 0)
        if "decoder" in stack["module"] and family == "bart" and method in EXACT_MEFT:
            call = tokens * F32
        # exact arithmetic's reconstruction check: one int64 checksum per stream per reversible layer
        checksums = 2 * I64 * layers if method in EXACT_MEFT else 0
        assert stack["other"] == 2 * tokens * stream + call + checksums
    assert r.layers["reversible_bits"].sum() == stacks["reversible_bits"].sum()  # nowhere else


def test_fake_equals_cpu_in_bf16(tiny):
    fake = profile(tiny, "opt", dtype="bf16", engine="fake", target="cpu")
    cpu = profile(tiny, "opt", dtype="bf16", engine="cpu")
    pd.testing.assert_frame_equal(fake.layers, cpu.layers)
    assert fake.memory == cpu.memory


@pytest.mark.matrix(keep=lambda p: p["method"] in ("ft", "lora+ckpt", "meft1", "meft3-float", "lst"))
@pytest.mark.parametrize("method", methods.names())
def test_recomputation_meets_the_same_cuda_kernels(tiny, method):
    # Checkpointing and MEFT recompute in backward; torch.utils.checkpoint compares what the
    # recomputation saves with what the forward saved, so a kernel model missing in backward fails.
    r = profile(tiny, "bart", method, dtype="mixed-bf16", engine="fake", target="cuda")
    # prefix: the decoder's causal mask over the prefix columns is explicit, which flash cannot take
    expected = "sdpa-flash+sdpa-efficient" if method == "prefix" else "sdpa-flash"
    assert (r.status, r.attn_implementation) == ("ok", expected)
    assert r.memory.peak_activations >= r.memory.saved_activations > 0


def test_bart_classification_head_is_profiled(tiny):
    # The head finds </s> with a data-dependent mask: fake runs it on real integer values.
    r = profile(tiny, "bart", engine="fake", target="cpu")
    assert row(r, "classification_head.dense")["linear_input"] == B * H * F32  # the picked </s> states
    assert row(r, "classification_head")["activation_fn"] == B * H * F32  # tanh's output: out_proj's input
    assert row(r, "")["other"] >= B * 2 * 8  # the (B, 2) int64 indices of the boolean indexing, labels


# -- what the fake engine models for target cuda -------------------------------------------------


@pytest.mark.parametrize(
    "family, dtype, attn, expected",
    [
        ("bert", "fp32", "sdpa", "sdpa-efficient"),  # flash needs half precision
        ("bert", "bf16", "sdpa", "sdpa-flash"),
        ("opt", "mixed-fp16", "sdpa", "sdpa-flash"),  # autocast casts q, k, v to fp16
        ("bart", "fp32", "eager", "eager"),
    ],
)
def test_attention_kernel_for_target_cuda(tiny, family, dtype, attn, expected):
    assert profile(tiny, family, dtype=dtype, attn=attn, engine="fake", target="cuda").attn_implementation == expected


def test_attention_kernel_for_target_cpu(tiny):
    # CPU's flash kernel takes no dropout: BERT (attention dropout 0.1) runs the math path, OPT flash.
    assert profile(tiny, "bert", engine="fake", target="cpu").attn_implementation == "sdpa-math"
    assert profile(tiny, "opt", engine="fake", target="cpu").attn_implementation == "sdpa-flash-cpu"


def test_efficient_attention_saves_q_k_v_output_and_logsumexp(tiny):
    r = profile(tiny, "opt", engine="fake", target="cuda")
    qkv_out = 4 * B * S * H * F32  # q, k, v projections and the output, (B, S, H) each
    lse = B * HEADS * 32 * F32  # (B, heads, S rounded up to 32) fp32
    philox = 2 * 8  # seed and offset, int64 scalars
    assert row(r, "model.decoder.layers.0.self_attn")["attention_scores"] == qkv_out + lse + philox


def test_flash_attention_saves_q_k_v_output_and_logsumexp(tiny):
    r = profile(tiny, "opt", dtype="bf16", engine="fake", target="cuda")
    qkv_out = 4 * B * S * H * 2  # bf16
    lse = B * HEADS * S * F32  # (B, heads, S) fp32
    rng = 2 * 8 + 8  # the RNG state: a (2,) uint64 seed/offset pair, and an unused uint64 scalar
    assert row(r, "model.decoder.layers.0.self_attn")["attention_scores"] == qkv_out + lse + rng


def test_eager_attention_saves_the_probabilities(tiny):
    r = profile(tiny, "bert", attn="eager", engine="fake", target="cuda")
    probs = B * HEADS * S * S * F32
    self_attn = row(r, "bert.encoder.layer.0.attention.self")
    assert self_attn["softmax_output"] == probs
    assert self_attn["dropout_mask"] == probs // F32  # CUDA's fused dropout keeps a boolean mask
    # The two batched products keep q, k, v and the dropped-out probabilities.
    assert self_attn["attention_scores"] == 3 * B * S * H * F32 + probs


def test_dropout_mask_follows_the_target(tiny):
    cuda = profile(tiny, "bert", engine="fake", target="cuda")
    cpu = profile(tiny, "bert", engine="fake", target="cpu")
    assert row(cuda, "bert.embeddings.dropout")["dropout_mask"] == B * S * H  # bool
    assert row(cpu, "bert.embeddings.dropout")["dropout_mask"] == B * S * H * F32  # float


def test_emulated_cuda_autocast_runs_matmuls_in_half(tiny):
    r = profile(tiny, "bert", dtype="mixed-bf16", engine="fake", target="cuda")
    # LayerNorm runs in fp32, so the next Linear keeps a bf16 copy of its input, and autocast's bf16
    # copy of its weight (which backward needs for the input's gradient) ...
    assert row(r, "bert.encoder.layer.0.intermediate.dense")["linear_input"] == B * S * H * 2 + FFN * H * 2
    # ... and GELU keeps the Linear's bf16 output.
    assert row(r, "bert.encoder.layer.0.intermediate.intermediate_act_fn")["activation_fn"] == B * S * FFN * 2
    fp32 = profile(tiny, "bert", engine="fake", target="cuda")
    assert r.memory.saved_activations < fp32.memory.saved_activations


# -- results, the cache, failures ---------------------------------------------------------------


def test_result_fields(tiny):
    r = profile(tiny, "opt", "lora", engine="fake")
    assert (r.engine, r.target, r.dtype, r.task, r.status) == ("fake", "cuda", "fp32", "causal-lm", "ok")
    assert list(r.layers.columns) == list(LAYER_COLUMNS)
    assert r.environment["torch"] == torch.__version__
    assert 0 < r.trainable_params < r.total_params
    assert r.memory.peak == (
        r.memory.parameters
        + r.memory.gradients
        + r.memory.optimizer_state
        + r.memory.activations_at_peak
        + r.memory.temporaries
    )
    assert r.step_time_s is None and profile(tiny, "opt", engine="cpu").step_time_s > 0


def test_model_cache_builds_once_and_leaves_the_model_reusable(tiny):
    cache = ModelCache()
    first = run(ProfileConfig(tiny["bert"], "lora", S, B, engine="cpu"), cache)
    bigger = run(ProfileConfig(tiny["bert"], "lora", 2 * S, B, engine="cpu"), cache)
    again = run(ProfileConfig(tiny["bert"], "lora", S, B, engine="cpu"), cache)
    assert cache.builds == 1
    assert again.memory == first.memory
    pd.testing.assert_frame_equal(again.layers, first.layers)
    assert bigger.memory.saved_activations > first.memory.saved_activations
    (built,) = cache._models.values()
    assert all(p.grad is None for p in built.model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in built.model.modules())
    from torch.nn.modules import module as nn_module

    assert not nn_module._global_forward_hooks and not nn_module._global_forward_pre_hooks
    run(ProfileConfig(tiny["bert"], "ft", S, B, engine="cpu"), cache)
    assert cache.builds == 2 and len(cache) == 1


def test_an_empty_model_cache_is_still_the_one_given():
    from memprof.engines import ModelCache

    # ``cache or ModelCache()`` must keep the caller's cache even before anything is built in it
    given = ModelCache()
    assert len(given) == 0 and (given or ModelCache()) is given


def test_out_of_memory_becomes_a_result(tiny, monkeypatch):
    from memprof.engines import cpu

    def boom(built, config):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(cpu.ENGINE, "run", boom)
    r = run(ProfileConfig(tiny["bert"], "ft", S, B, engine="cpu"))
    assert (r.status, r.seq_len, r.batch_size) == ("oom", S, B)
    assert "Tried to allocate 2.00 GiB" in r.message


def test_other_errors_propagate(tiny, monkeypatch):
    from memprof.engines import cpu

    def boom(built, config):
        raise ValueError("something else")

    monkeypatch.setattr(cpu.ENGINE, "run", boom)
    with pytest.raises(ValueError, match="something else"):
        run(ProfileConfig(tiny["bert"], "ft", S, B, engine="cpu"))


def test_public_profile_validates(tiny):
    r = memprof.profile(tiny["opt"], "lora", seq_len=S, batch_size=B)
    assert (r.method, r.engine, r.target) == ("lora", "fake", "cuda")
    with pytest.raises(memprof.MemprofError, match="batch size 0"):
        memprof.profile(tiny["opt"], batch_size=0)


# -- gradient checkpointing: the layer-boundary hidden states -------------------------------------


def test_checkpointed_layer_inputs_are_live_activations(tiny):
    from memprof.methods.ckpt import checkpoint
    from memprof.models.tasks import build_model, make_batch

    bb = backbones.resolve(tiny["bert"])
    batch = make_batch(bb, "classification", B, S)

    def measure(checkpointing: bool):
        torch.manual_seed(0)
        model = build_model(bb, attn_implementation="sdpa")
        if checkpointing:
            checkpoint(model)  # non-reentrant, through transformers, as the ckpt methods do
        opt = torch.optim.AdamW(model.parameters())
        with memprof.track(model, opt) as prof:
            loss = model(**batch).loss
            loss.backward()
            opt.step()
            del loss
        return prof

    plain, ckpt = measure(False), measure(True)
    hidden = B * S * H * F32
    m = ckpt.result.memory
    # Every checkpointed layer keeps its input hidden states until backward recomputes it: live
    # activation memory at the end of the forward. torch.utils.checkpoint saves these inputs itself,
    # outside its own hooks, so memprof's hooks see them and file them under the layer, as "other";
    # what nothing saves would be unattributed.
    assert ckpt.measurement.live.forward_end_activations == m.saved_activations + m.unattributed
    assert m.saved_activations + m.unattributed >= LAYERS * hidden
    for i in range(LAYERS):
        assert row(ckpt.result, f"bert.encoder.layer.{i}")["other"] == hidden
    assert m.saved_activations < plain.result.memory.saved_activations
    # The recomputation makes each layer's activations live again, one layer at a time.
    assert m.peak_activations < plain.result.memory.peak_activations


# -- the cuda engine (skipped without a GPU) ------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("family", ["bert", "opt"])
def test_cuda_engine_matches_the_fake_model_of_cuda(tiny, family):
    cuda = profile(tiny, family, engine="cuda")
    fake = profile(tiny, family, engine="fake", target="cuda")
    assert cuda.status == "ok" and cuda.attn_implementation == fake.attn_implementation
    assert cuda.memory.saved_activations == fake.memory.saved_activations
    pd.testing.assert_frame_equal(cuda.layers, fake.layers)
    assert cuda.memory.cuda_max_allocated >= cuda.memory.parameters
    assert cuda.memory.cuda_max_reserved >= cuda.memory.cuda_max_allocated
    assert cuda.memory.nvml_used is None or cuda.memory.nvml_used >= cuda.memory.cuda_max_reserved
