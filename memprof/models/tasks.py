"""Model heads and synthetic batches per task.

Tasks: ``classification`` (sequence classification, 2 labels), ``causal-lm`` and ``seq2seq``
(BART conditional generation); which a backbone offers is its family's (``Profiling.tasks``).
Synthetic batches fill the full sequence length with ordinary tokens (no padding, no special
token), as the MEFT paper did for its memory measurements; a family whose classification head reads
the end-of-sentence token (``Profiling.eos_last``: BART) gets exactly one, last in every row.
"""

from __future__ import annotations

import torch
from torch import nn

from memprof.errors import MemprofError, one_line
from memprof.models.backbones import Backbone
from memprof.results.configuration import default

TASKS = ("classification", "causal-lm", "seq2seq")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")
NUM_LABELS = 2


def check_task(backbone: Backbone, task: str | None) -> str:
    task = task or backbone.default_task
    allowed = backbone.spec.profiling.tasks
    if task not in allowed:
        raise MemprofError(
            f"task {task!r} is not available for {backbone.family} backbone {backbone.name!r}; "
            f"use one of {', '.join(allowed)}"
        )
    return task


def _auto_class(task: str):
    import transformers

    return {
        "classification": transformers.AutoModelForSequenceClassification,
        "causal-lm": transformers.AutoModelForCausalLM,
        "seq2seq": transformers.AutoModelForSeq2SeqLM,
    }[task]


def build_model(
    backbone: Backbone,
    task: str | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "eager",
    pretrained: bool = True,
) -> nn.Module:
    """Build the task model for ``backbone`` on ``device`` (``"meta"`` for the fake engine).

    Real weights are loaded when the backbone has them, ``pretrained`` is true and the device is
    not meta; otherwise parameters are randomly initialised (meta: not initialised at all).
    The model is returned in train mode.
    """
    task = check_task(backbone, task)
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise MemprofError(
            f"attention implementation {attn_implementation!r} is not one of {', '.join(ATTN_IMPLEMENTATIONS)}; "
            "pass --attn eager or --attn sdpa"
        )
    cls = _auto_class(task)
    extra = {"num_labels": NUM_LABELS} if task == "classification" else {}
    if task == "classification" and backbone.config.get("pad_token_id") is None:
        # A decoder's classification head pools the last non-pad token, so it needs a pad id; the
        # synthetic batch holds none, as when a tokenizer's pad token is its end-of-sentence one.
        eos = backbone.get("eos_token_id")
        eos = eos[0] if isinstance(eos, list) and eos else eos
        vocab = backbone.get(backbone.spec.fields.vocab)
        # An id outside the vocabulary could not be the embeddings' padding_idx; 0 never occurs in
        # the batch (its ids start above the special tokens).
        extra["pad_token_id"] = eos if isinstance(eos, int) and 0 <= eos < vocab else 0
    config = backbone.hf_config(**extra)
    config._attn_implementation = attn_implementation
    if backbone.weights and pretrained and str(device) != "meta":
        from transformers.utils import logging as hf_logging

        # The task head is new by design; transformers' load report about it is noise here, and
        # its progress bar would make a refusal's one line several on stderr.
        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            model = cls.from_pretrained(
                backbone.weights,
                config=config,
                local_files_only=True,
                dtype=dtype,
                attn_implementation=attn_implementation,
            )
        except Exception as exc:  # noqa: BLE001 - corrupt weights the structure checks miss (backbones.check_weights)
            if "memory" in str(exc).lower():
                raise  # the host ran out: the engines record that as such
            raise MemprofError(
                f"backbone {backbone.name!r}: cannot load the weights in {backbone.weights!r} ({one_line(exc)}); "
                "download or save the model again, or pass its config.json alone for random weights"
            ) from None
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        model = model.to(device)
    else:
        with torch.device(device):
            try:
                model = cls.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
            except (ValueError, TypeError, AssertionError, IndexError, KeyError, RuntimeError, OverflowError) as exc:
                if "memory" in str(exc).lower():
                    raise  # the host ran out: the engines record that as such
                # the config passed its checks (backbones.check_config) but the model's own
                # constructor refuses it: bad input all the same, in one line
                raise MemprofError(
                    f"backbone {backbone.name!r}: transformers cannot build a {task} model from this "
                    f"config ({one_line(exc)}); fix the config"
                ) from None
    model.train()
    return model


def _ids(value) -> list[int]:
    """Token ids of a config field: none, one, or a list (several end-of-sentence ids)."""
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]


def make_batch(
    backbone: Backbone,
    task: str,
    batch_size: int,
    seq_len: int,
    *,
    device: str | torch.device = "cpu",
    seed: int = default("seed"),
) -> dict[str, torch.Tensor]:
    """A synthetic batch of token ids (no padding) with labels for ``task``."""
    spec = backbone.spec
    vocab = int(backbone.get(spec.fields.vocab))
    gen = torch.Generator().manual_seed(seed)
    # Ids above the low special tokens, and none of the padding or end-of-sentence ids wherever the
    # vocabulary puts them (GPT-2's and Llama's are its last ids): no row holds one by accident.
    first = spec.profiling.first_token
    low = first if vocab > 2 * first else 0
    ids = torch.randint(low, vocab, (batch_size, seq_len), generator=gen)
    eos = backbone.get("eos_token_id")
    special = [t for key in ("pad_token_id", "eos_token_id") for t in _ids(backbone.get(key)) if low <= t < vocab]
    if special and vocab - low > len(special):
        ids[torch.isin(ids, torch.tensor(special))] = next(t for t in range(low, vocab) if t not in special)
    if eos is not None and spec.profiling.eos_last:
        ids[:, -1] = int(eos)
    batch = {"input_ids": ids, "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long)}
    if task == "classification":
        batch["labels"] = torch.randint(0, NUM_LABELS, (batch_size,), generator=gen)
    elif task == "causal-lm":
        batch["labels"] = ids.clone()
    elif task == "seq2seq":
        batch["labels"] = torch.randint(low, vocab, (batch_size, seq_len), generator=gen)
    return {k: v.to(device) for k, v in batch.items()}
