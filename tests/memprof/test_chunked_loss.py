"""The chunked causal-LM loss (``memprof.models.losses``, NOTE [ Chunked causal-LM loss ]): its value and
gradients equal the unchunked loss's for every method on every causal-LM family; the fake engine
shows the full logits' bytes gone from the step's peak, byte for byte as the cpu engine measures it;
results record the loss; bad input is refused in one line."""

import json

import pytest
import torch
import torch.nn.functional as F

import memprof
from memprof import methods
from memprof.engines import run
from memprof.engines.config import ProfileConfig
from memprof.errors import MemprofError
from memprof.models import backbones, tasks
from memprof.models.losses import CHUNK_SIZE, chunked_causal_lm_loss
from memprof.results.result import KEY_FIELDS, Result, ResultSet, key_label, load_results

H, V = 16, 64
_LLAMA = dict(
    hidden_size=H,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=H // 2,
    intermediate_size=32,
    max_position_embeddings=32,
    vocab_size=V,
)
#: tiny configs of every causal-LM family. The OPT is opt-350m's shape: post-LayerNorm, and a
#: ``project_out`` (hidden 16 -> 8) between the last layer and the tied head, which the head must see.
TINY = {
    "opt": (
        "opt-350m",
        dict(
            hidden_size=H,
            num_hidden_layers=2,
            num_attention_heads=2,
            ffn_dim=32,
            word_embed_proj_dim=8,
            max_position_embeddings=32,
            vocab_size=V,
        ),
    ),
    "llama": ("llama-3.2-1b", _LLAMA),
    "qwen2": ("qwen2.5-0.5b", {**_LLAMA, "sliding_window": 32, "max_window_layers": 2}),
    "mistral": ("mistral-7b", {**_LLAMA, "sliding_window": 4}),  # shorter than the sequence: a banded mask
    "gpt2": ("gpt2", dict(n_embd=H, n_layer=2, n_head=2, n_positions=32, vocab_size=V)),  # head tied to wte
}
#: 3 x 7 = 21 tokens in chunks of 5: 5, 5, 5, 5, 1
B, S, CHUNK = 3, 7, 5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """family -> path of its tiny config.json."""
    root = tmp_path_factory.mktemp("chunked")
    paths = {}
    for family, (name, shrink) in TINY.items():
        (root / family).mkdir()
        (root / family / "config.json").write_text(json.dumps({**backbones.builtin()[name], **shrink}))
        paths[family] = str(root / family)
    return paths


def build(path: str, method: str, dtype: torch.dtype):
    """The causal-LM model memprof builds for ``method``, in ``dtype``, with every trainable tensor
    that starts at zero (LoRA's B, adapters' up-projections) made non-zero, so that every gradient is
    a real number to compare, not a zero."""
    backbone = backbones.resolve(path)
    torch.manual_seed(0)
    model = tasks.build_model(backbone, "causal-lm", dtype=dtype, attn_implementation="eager")
    model = methods.get(method).apply(model, backbone, "causal-lm")
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and not p.any():
                p.normal_(std=0.1)
    return model, backbone


def padded_batch(backbone, batch: int = B, seq: int = S) -> dict[str, torch.Tensor]:
    """A batch with ignored labels: row 0's first two (a prompt), row 1's last three (right padding,
    masked out of attention too)."""
    out = tasks.make_batch(backbone, "causal-lm", batch, seq, seed=1)
    out["labels"][0, :2] = -100
    out["labels"][1, -3:] = -100
    out["attention_mask"][1, -3:] = 0
    return out


def unchunked(model, batch) -> torch.Tensor:
    """transformers' causal-LM loss (``ForCausalLMLoss``: labels padded with -100 and shifted by one, the
    mean over the tokens not ignored) on the model's full logits, upcast to at least fp32: transformers
    casts to exactly fp32, which would round a float64 model's loss to 1e-7."""
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits  # (B, S, V)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    labels = F.pad(batch["labels"], (0, 1), value=-100)[:, 1:]  # (B, S): t predicts t + 1
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


def loss_and_grads(model, compute) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``compute()``'s loss and the gradients it gives, from the same random state (dropout)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    loss = compute()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def assert_same_gradients(got: dict, want: dict, rel: float) -> None:
    """Every parameter that gets a gradient gets one in both, equal to ``rel`` of the largest gradient
    (a gradient that is zero in exact arithmetic, such as a key bias's, is rounding noise in both)."""
    assert sorted(got) == sorted(want) and want
    scale = max(g.double().abs().max().item() for g in want.values())
    assert scale > 0
    worst = max(((got[n].double() - want[n].double()).abs().max().item(), n) for n in want)
    assert worst[0] <= rel * scale, f"{worst[1]}: {worst[0]:.3e} > {rel} x {scale:.3e}"


def check_equal(path: str, method: str, dtype=torch.float64, rel: float = 1e-12) -> None:
    model, backbone = build(path, method, dtype)
    batch = padded_batch(backbone)
    want, want_grads = loss_and_grads(model, lambda: unchunked(model, batch))
    got, got_grads = loss_and_grads(model, lambda: chunked_causal_lm_loss(model, batch, chunk_size=CHUNK))
    assert got.dtype == want.dtype
    assert relative(got, want) <= rel
    assert_same_gradients(got_grads, want_grads, rel)
    # transformers' own loss, computed in fp32, is the same loss to fp32's precision
    hf, _ = loss_and_grads(model, lambda: model(**batch).loss)
    assert relative(got, hf) <= 1e-6


# -- the same loss and gradients -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["ft", "lora", "meft1"])
@pytest.mark.parametrize("family", ["opt", "llama"])
def test_loss_and_gradients_equal_the_unchunked_loss(tiny, family, method):
    check_equal(tiny[family], method)


@pytest.mark.matrix(keep=lambda p: p["method"] in ("ft", "lora", "lora+ckpt", "meft1", "prefix"))
@pytest.mark.parametrize("method", [m for m in methods.names() if not methods.get(m).alias_of])
def test_every_method(tiny, method):
    """Every method memprof builds, wrappers and hooks included (peft, MEFT's reversible stack,
    prefix tuning's cache, LST's side network, checkpointed layers): on the OPT, which has biases."""
    check_equal(tiny["opt"], method)


@pytest.mark.matrix(keep=lambda p: p["method"] == "meft1" or p["family"] == "gpt2")
@pytest.mark.parametrize("method", ["ft", "lora", "meft1"])
@pytest.mark.parametrize("family", ["qwen2", "mistral", "gpt2"])
def test_every_causal_family(tiny, family, method):
    check_equal(tiny[family], method)


@pytest.mark.parametrize("method", ["ft", "lora", "meft1"])
@pytest.mark.parametrize("family", ["opt", "llama"])
def test_bf16(tiny, family, method):
    """In bf16 the loss is the model's own to fp32's precision (the same bf16 logits, summed in another
    order); gradients differ by bf16 rounding (the head's gradient is summed over the chunks in bf16)."""
    model, backbone = build(tiny[family], method, torch.bfloat16)
    batch = padded_batch(backbone)
    want, want_grads = loss_and_grads(model, lambda: model(**batch).loss)
    got, got_grads = loss_and_grads(model, lambda: chunked_causal_lm_loss(model, batch, chunk_size=CHUNK))
    assert got.dtype == want.dtype == torch.float32
    assert relative(got, want) <= 1e-6
    assert_same_gradients(got_grads, want_grads, 2**-7)


@pytest.mark.parametrize("chunk_size", [1, 4, B * S, 100])
def test_any_chunk_size(tiny, chunk_size):
    """One token per chunk, chunks that do not divide the 21 tokens, one chunk, a chunk larger than the batch."""
    model, backbone = build(tiny["llama"], "lora", torch.float64)
    batch = padded_batch(backbone)
    want, want_grads = loss_and_grads(model, lambda: unchunked(model, batch))
    got, got_grads = loss_and_grads(model, lambda: chunked_causal_lm_loss(model, batch, chunk_size=chunk_size))
    assert relative(got, want) <= 1e-12
    assert_same_gradients(got_grads, want_grads, 1e-12)


def test_ignored_labels_are_ignored(tiny):
    """Ignoring one more label changes the loss as it changes transformers'; a batch whose labels are all
    ignored has no loss (0/0: NaN, as transformers gives)."""
    model, backbone = build(tiny["llama"], "ft", torch.float64)
    batch = padded_batch(backbone)
    with torch.no_grad():
        first = chunked_causal_lm_loss(model, batch, chunk_size=CHUNK)
        batch["labels"][0, 2] = -100  # what position 1 of row 0 predicted
        second = chunked_causal_lm_loss(model, batch, chunk_size=CHUNK)
        assert relative(first, second) > 1e-3 and relative(second, unchunked(model, batch)) <= 1e-12
        batch["labels"][:] = -100
        assert torch.isnan(chunked_causal_lm_loss(model, batch, chunk_size=CHUNK)) and torch.isnan(model(**batch).loss)


def test_under_track(tiny):
    """In a user's own loop under ``memprof.track``: no (B, S, V) fp32 tensor is kept for backward. The
    model's own loss keeps its fp32 log-softmax (B·S·V·4 bytes); the chunked loss keeps the head's input
    instead (B·S·H·4: what the chunks are recomputed from; a frozen head's product needs only its
    weight for backward), and a few bytes of scalars (its count of labels, where nll_loss keeps a
    total weight)."""
    model, backbone = build(tiny["llama"], "lora", torch.float32)
    batch = padded_batch(backbone)
    saved = {}
    for name, compute in (
        ("full", lambda: model(**batch).loss),
        ("chunked", lambda: memprof.chunked_causal_lm_loss(model, batch, chunk_size=CHUNK)),
    ):
        with memprof.track(model) as prof:
            compute().backward()
        model.zero_grad(set_to_none=True)
        saved[name] = prof.result.memory.saved_activations
    assert saved["full"] - saved["chunked"] >= B * S * V * 4 - B * S * H * 4 - 8


# -- memory: the fake engine, and fake == cpu -----------------------------------------------------


@pytest.fixture(scope="module")
def large_vocab(tmp_path_factory):
    """A llama-like config whose vocabulary dwarfs its width (as Llama 3's 128,256 do its 2,048)."""
    folder = tmp_path_factory.mktemp("vocab") / "llama-32k"
    folder.mkdir()
    config = {**backbones.builtin()["llama-3.2-1b"], **_LLAMA, "max_position_embeddings": 256, "vocab_size": 32_000}
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.mark.parametrize("method", ["ft", "lora", "meft1"])
def test_fake_engine_peak_drops_by_the_full_logits(large_vocab, method):
    """bf16, target cuda, 4 x 256 = 1,024 tokens, 4 chunks of 256. The model's own loss keeps its fp32
    log-softmax (N·V·4 bytes, N = B·S) for backward, where the gradients of that output and of its input
    (N·V·4 each) are alive at once: its peak holds 3·N·V·4 bytes of loss tensors; the chunked loss holds
    the same three for one chunk (3·c·V·4), and keeps none. What the chunked step holds that the other
    does not at its peak: the head's gradient, accumulated over the chunks (ft: V·H·2 bytes), and the
    hidden states' gradient in pieces (at most 2·N·H·2 bytes). It keeps the head's input (N·H·2) for
    the recomputation, and a few bytes of scalars (test_under_track)."""
    b, s, c, v, e = 4, 256, CHUNK_SIZE, 32_000, 2
    n = b * s
    full, chunked = (
        run(ProfileConfig(large_vocab, method, s, b, dtype="bf16", loss=loss)) for loss in ("full", "chunked")
    )
    assert (full.loss, chunked.loss) == ("full", "chunked")
    assert full.memory.peak - chunked.memory.peak >= 3 * (n - c) * v * 4 - v * H * e - 2 * n * H * e
    assert full.memory.peak - chunked.memory.peak >= n * v * 4 - c * v * 4  # at least the fp32 logits, but a chunk
    assert full.memory.saved_activations - chunked.memory.saved_activations >= n * v * 4 - n * H * e - 8
    # at its peak: one chunk's three tensors, and the head's gradient (ft) and pieces of the hidden states' gradient
    assert chunked.memory.temporaries <= 3 * c * v * 4 + v * H * e + 2 * n * H * e < n * v * 4


@pytest.mark.parametrize("method", ["ft", "lora+ckpt", "meft1", "prefix"])
def test_fake_equals_cpu(tiny, method):
    """The fake engine models the chunked loss byte for byte as the cpu engine measures it."""
    fake, cpu = (
        run(ProfileConfig(tiny["llama"], method, S, B, engine=engine, target="cpu", loss="chunked"))
        for engine in ("fake", "cpu")
    )
    assert fake.memory == cpu.memory and fake.layers.equals(cpu.layers)
    assert fake.loss == cpu.loss == "chunked"


# -- results record the loss ----------------------------------------------------------------------


def test_results_record_the_loss(tiny, tmp_path):
    r = memprof.profile(tiny["opt"], "lora", seq_len=8, batch_size=2)
    chunked = run(ProfileConfig(tiny["opt"], "lora", 8, 2, loss="chunked"))
    assert (r.loss, chunked.loss) == ("full", "chunked") and KEY_FIELDS[-1] == "loss"
    assert r.key[:-1] == chunked.key[:-1] and r.key != chunked.key
    assert key_label(chunked.key) == key_label(r.key) + " chunked loss"
    assert Result.from_dict(chunked.to_dict()).loss == "chunked"
    # a version 3 file (written before the field existed) is read with the model's own loss
    old = {**r.to_dict(), "schema_version": 3}
    del old["loss"]
    (tmp_path / "v3.json").write_text(json.dumps({"schema_version": 3, "command": "", "options": {}, "results": [old]}))
    (read,) = load_results(tmp_path / "v3.json").results
    assert read.loss == "full" and read.key == r.key and read.memory == r.memory
    with pytest.raises(
        MemprofError, match=r"^result \(.*\): loss is 'sum' \(a string\), must be one of full, chunked; "
    ):
        Result.from_dict({**r.to_dict(), "loss": "sum"})
    with pytest.raises(MemprofError, match=r"^result \(.*\): loss is missing, must be a string; "):
        Result.from_dict({k: v for k, v in r.to_dict().items() if k != "loss"})


def test_the_committed_baseline_reads_as_full_loss():
    rs = load_results("reports/baseline/baseline.json")
    assert rs.results and {r.loss for r in rs.results} == {"full"}
    assert ResultSet.from_dict(rs.to_dict()).results[0].key == rs.results[0].key


# -- bad input: one line ----------------------------------------------------------------------------


def test_api_refusals(tiny):
    model, backbone = build(tiny["llama"], "ft", torch.float32)
    batch = padded_batch(backbone)
    classifier = tasks.build_model(backbones.resolve(tiny["llama"]), "classification")
    cases = [
        (lambda: chunked_causal_lm_loss(model, batch, chunk_size=0), "chunk_size=0 must be a whole number of tokens"),
        (lambda: chunked_causal_lm_loss(model, batch, chunk_size=True), "chunk_size=True must be a whole number"),
        (lambda: chunked_causal_lm_loss(model, batch, chunk_size=2.5), "chunk_size=2.5 must be a whole number"),
        (lambda: chunked_causal_lm_loss(model, {"input_ids": batch["input_ids"]}), "the batch has no 'labels' tensor"),
        (lambda: chunked_causal_lm_loss(model, [batch]), "the batch is a list, not a dict"),
        (lambda: chunked_causal_lm_loss("model", batch), "needs a torch.nn.Module, got model='model'"),
        (
            lambda: chunked_causal_lm_loss(model, {**batch, "labels": batch["labels"][:, :3]}),
            "labels of shape (3, 3) do not match the (3, 7) positions the head receives",
        ),
        (
            lambda: chunked_causal_lm_loss(classifier, {**batch, "labels": torch.zeros(B, dtype=torch.long)}),
            "LlamaForSequenceClassification has no output embeddings (lm_head)",
        ),
    ]
    for call, says in cases:
        with pytest.raises(MemprofError) as refused:
            call()
        assert says in str(refused.value) and "\n" not in str(refused.value)


def test_api_refuses_an_encoder_decoder():
    bart = tasks.build_model(backbones.resolve("bart-base"), "seq2seq", device="meta")
    with pytest.raises(
        MemprofError,
        match="BartForConditionalGeneration is an encoder-decoder; it computes the loss of a causal language model",
    ):
        chunked_causal_lm_loss(bart, {"input_ids": torch.ones(1, 4, dtype=torch.long), "labels": torch.ones(1, 4)})


@pytest.mark.parametrize(
    "kwargs, says",
    [
        (
            dict(backbone="bert-base", loss="chunked"),
            "loss 'chunked' is a causal-LM loss and the task is 'classification'; pass task='causal-lm' (--task causal-lm) "
            "on a decoder (opt, llama, qwen2, mistral, gpt2), or loss='full'",
        ),
        (dict(backbone="opt-125m", task="classification", loss="chunked"), "the task is 'classification'"),
        (dict(backbone="opt-125m", loss="sum"), "unknown loss 'sum'; use one of full, chunked"),
        (dict(backbone="opt-125m", loss=None), "loss=None (NoneType) is not a loss name: it must be a str"),
    ],
)
def test_config_refusals(kwargs, says):
    with pytest.raises(MemprofError) as refused:
        ProfileConfig(**kwargs)
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_no_formula_for_the_chunked_loss():
    from memprof.engines.symbolic import derive

    with pytest.raises(MemprofError, match="loss 'chunked' has no closed form: its step runs one chunk per 256 tokens"):
        derive(ProfileConfig("opt-125m", "lora", loss="chunked"))


# -- the CLI ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, says",
    [
        (
            ["profile", "--backbone", "bert-base", "--loss", "chunked"],
            "loss 'chunked' is a causal-LM loss and the task",
        ),
        (["profile", "--backbone", "opt-125m", "--loss", "sum"], "unknown loss 'sum'; use one of full, chunked"),
        (
            ["compare", "--backbone", "bert-base", "--loss", "chunked"],
            "loss 'chunked' is a causal-LM loss and the task",
        ),
        (["fit", "--backbone", "bert-base", "--loss", "chunked", "--budget", "8GiB"], "loss 'chunked' is a causal-LM"),
        (["formula", "--backbone", "opt-125m", "--loss", "chunked"], "loss 'chunked' has no closed form"),
        (
            ["formula", "--backbone", "bert-base", "--loss", "chunked"],
            "loss 'chunked' is a causal-LM loss and the task",
        ),
    ],
)
def test_cli_refusals(cli, args, says):
    code, out, err = cli(*args)
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1, (code, err)


def test_cli_profile(cli, tiny, tmp_path):
    code, out, err = cli(
        "profile",
        "--backbone",
        tiny["opt"],
        "--method",
        "lora",
        "--seq-len",
        "8",
        "--batch-size",
        "2",
        "--loss",
        "chunked",
        "--json",
        tmp_path / "r.json",
    )
    assert code == 0, err
    assert "| fp32 | chunked loss | engine fake" in out
    (result,) = load_results(tmp_path / "r.json").results
    want = run(ProfileConfig(tiny["opt"], "lora", 8, 2, loss="chunked"))
    assert result.loss == "chunked" and result.memory == want.memory


def test_cli_compare_records_the_loss_and_resumes_only_with_it(cli, tiny, tmp_path):
    args = ["compare", "--backbone", tiny["opt"], "--methods", "ft", "--seq-lens", "8", "--batch-sizes", "2"]
    code, _, err = cli(*args, "--loss", "chunked", "--out", tmp_path / "sweep", "--quiet")
    assert code == 0, err
    rs = load_results(tmp_path / "sweep" / "results.json")
    assert rs.options["loss"] == "chunked" and rs.command.endswith("--loss chunked")
    assert [r.loss for r in rs.results] == ["chunked"]
    code, _, err = cli("compare", "--resume", tmp_path / "sweep", "--loss", "full")
    assert code == 2 and "was swept with loss='chunked', not 'full'" in err


def test_cli_fit(cli, tiny, tmp_path):
    code, out, err = cli(
        "fit",
        "--backbone",
        tiny["opt"],
        "--methods",
        "lora",
        "--seq-len",
        "16",
        "--budget",
        "400000",
        "--context",
        "0",
        "--loss",
        "chunked",
        "--json",
        tmp_path / "fit.json",
    )
    assert code == 0, err
    assert "| fp32 | chunked loss | budget" in out
    assert json.loads((tmp_path / "fit.json").read_text())["loss"] == "chunked"


def test_memprof_exports_the_loss():
    assert memprof.chunked_causal_lm_loss is chunked_causal_lm_loss and "chunked_causal_lm_loss" in memprof.__all__
    assert ProfileConfig("opt-125m").loss == "full"
