"""The loss of a training step: the model's own (``full``), or a causal-LM loss computed over the
tokens in chunks (``chunked``, ``chunked_causal_lm_loss``) that never holds the whole (B, S, V)
logits.

A causal-LM forward with labels materialises the logits over the vocabulary and upcasts them to fp32
for the loss (transformers' ``ForCausalLMLoss``): for Llama 3's 128,256-token vocabulary at sequence
512 x batch 16 in bf16, 1.96 GiB of logits and 3.91 GiB for each fp32 tensor of that shape (the
upcast; the log-softmax, kept for backward; in backward, the gradients of both), more than the rest
of the step for every parameter-efficient method. The chunked loss projects and scores
``chunk_size`` tokens at a time inside ``torch.utils.checkpoint`` (non-reentrant), so a chunk's
logits are freed as soon as its loss is summed and recomputed in backward, one chunk at a time (as
Liger-Kernel's fused linear cross-entropy and torchtune's chunked output loss do, here in plain
PyTorch). The peft wrapper of a model is looked through (``get_base_model``) to find the head; the
forward itself runs through the wrapper.

NOTE [ Chunked causal-LM loss ]
The contract: the value and gradients of transformers' causal-LM loss. Labels are shifted by one
(token t predicts label t + 1; the last position predicts nothing), ``-100`` is ignored, and the loss
is the sum of the per-token cross-entropies divided by the number of tokens not ignored (0/0 = NaN
when none is, as transformers gives). Logits are upcast to at least fp32 before the cross-entropy
(transformers casts to exactly fp32; a float64 model keeps float64 here, so it can be checked to
1e-12); only the order of the sum differs.

The hidden states are the ones the model's own output embeddings receive: the model runs its whole
forward as usual -- every wrapper and hook of a fine-tuning method (peft, MEFT's reversible stack,
prefix tuning's cache, a ladder side network) runs -- with a forward pre-hook on
``get_output_embeddings()`` that keeps the head's input and hands the head no position at all, so the
model computes (B, 0, V) logits: nothing. What the head receives is, by construction, what it
expects, whatever the family puts between the last layer and the head (a final norm, OPT's
``project_out``), and a tied head (GPT-2, OPT) is the same module. The chunks call the head module
itself, so a head a method wraps (LoRA on ``lm_head``) is the wrapped one; the checkpoint restores
the RNG state for the recomputation (a head with dropout recomputes the same mask).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from memprof.errors import MemprofError
from memprof.results.configuration import default
from memprof.units import short_repr

__all__ = ["CHUNK_SIZE", "IGNORE_INDEX", "chunked_causal_lm_loss", "training_loss"]

#: Tokens per chunk: one chunk's fp32 logits for a 128,256-token vocabulary are 125 MiB (the
#: engines' ``loss="chunked"`` uses it; Liger-Kernel's rule, about as many logits per chunk as the
#: hidden states hold, gives 256 for llama-3.2-1b at 8,192 tokens).
CHUNK_SIZE = 256
#: the label transformers' causal-LM loss ignores
IGNORE_INDEX = -100


def training_loss(model: nn.Module, batch: Mapping[str, torch.Tensor], loss: str = default("loss")) -> torch.Tensor:
    """The loss a profiled step backpropagates: ``model(**batch).loss`` (``"full"``), or
    ``chunked_causal_lm_loss(model, batch)`` (``"chunked"``)."""
    if loss == "chunked":
        return chunked_causal_lm_loss(model, batch)
    return model(**batch).loss


def chunked_causal_lm_loss(
    model: nn.Module, batch: Mapping[str, torch.Tensor], *, chunk_size: int = CHUNK_SIZE
) -> torch.Tensor:
    """The causal-LM loss of ``model(**batch)``, computed without materialising the (B, S, V) logits.

    Equals transformers' ``model(**batch).loss`` -- labels shifted by one, ``-100`` ignored, the mean
    over the tokens not ignored -- and so do its gradients (NOTE [ Chunked causal-LM loss ]). The
    model runs its forward as usual; its head then scores ``chunk_size`` tokens at a time under
    non-reentrant ``torch.utils.checkpoint``, so at most one chunk's logits (and their fp32 copy and
    log-softmax) are alive at once, in forward and in backward.

    Warning: the head's matrix product runs once more per token in backward (the recomputation).

    Args:
        model: a causal-LM model (``AutoModelForCausalLM``), possibly wrapped by peft or converted
            by ``meft.convert``.
        batch: what ``model(**batch)`` takes, with ``labels`` (B, S): token ids, ``-100`` where ignored.
        chunk_size: tokens (of the B x S) per chunk, at least 1.

    Raises:
        MemprofError: a model without output embeddings or an encoder-decoder, a batch without
            labels, a chunk size that is not a whole number of at least 1, labels that do not match
            the positions the head receives.

    Example::

        >>> loss = memprof.chunked_causal_lm_loss(model, {"input_ids": ids, "labels": ids})
        >>> loss.backward()
    """
    head = _check(model, batch, chunk_size)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = _head_input(model, head, inputs)  # (B, S, H)
    labels = batch["labels"]
    if tuple(hidden.shape[:2]) != tuple(labels.shape):
        raise MemprofError(
            f"chunked_causal_lm_loss: labels of shape {tuple(labels.shape)} do not match the "
            f"{tuple(hidden.shape[:2])} positions the head receives; pass labels of shape (batch, "
            "sequence), as for model(**batch).loss"
        )
    return _chunked_loss(head, hidden, labels.to(hidden.device), chunk_size)


def _check(model: object, batch: object, chunk_size: object) -> nn.Module:
    """The output embeddings (the head) of a valid call; MemprofError naming what is wrong otherwise."""
    if not isinstance(model, nn.Module):
        raise MemprofError(
            f"chunked_causal_lm_loss needs a torch.nn.Module, got model={short_repr(model)} "
            f"({type(model).__name__}); pass the causal-LM model itself"
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise MemprofError(
            f"chunked_causal_lm_loss: chunk_size={short_repr(chunk_size)} must be a whole number of "
            f"tokens of at least 1; pass e.g. chunk_size={CHUNK_SIZE}"
        )
    if not isinstance(batch, Mapping) or not isinstance(batch.get("labels"), torch.Tensor):
        what = "has no 'labels' tensor" if isinstance(batch, Mapping) else f"is a {type(batch).__name__}, not a dict"
        raise MemprofError(
            f"chunked_causal_lm_loss: the batch {what}; pass the keyword arguments of model(**batch) "
            "with labels (token ids, -100 where ignored), e.g. labels=input_ids"
        )
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model  # peft's wrapper
    config = getattr(base, "config", None)
    get_head = getattr(base, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(head, nn.Module) or getattr(config, "is_encoder_decoder", False):
        why = "is an encoder-decoder" if isinstance(head, nn.Module) else "has no output embeddings (lm_head)"
        raise MemprofError(
            f"chunked_causal_lm_loss: {type(base).__name__} {why}; it computes the loss of a causal "
            "language model (AutoModelForCausalLM): use the model's own loss for other tasks"
        )
    return head


def _head_input(model: nn.Module, head: nn.Module, inputs: dict) -> torch.Tensor:
    """Run ``model(**inputs)`` and return what its head received, the head given no position
    (NOTE [ Chunked causal-LM loss ])."""
    received: list[torch.Tensor] = []

    def keep(module, args):
        x = args[0] if len(args) == 1 else None
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            raise MemprofError(
                f"chunked_causal_lm_loss: the head {type(module).__name__} was called with "
                f"{len(args)} positional inputs, not one (batch, sequence, hidden) tensor; use the "
                "model's own loss for this model"
            )
        received.append(x)
        return (x[:, :0],)  # (B, 0, H): the model's logits are (B, 0, V)

    handle = head.register_forward_pre_hook(keep)
    try:
        model(**inputs)
    finally:
        handle.remove()
    if len(received) != 1:
        raise MemprofError(
            f"chunked_causal_lm_loss: the forward called the head {len(received)} times, not once; "
            "use the model's own loss for this model"
        )
    return received[0]


def _chunked_loss(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor, chunk_size: int) -> torch.Tensor:
    batch, seq, width = hidden.shape
    targets = F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:].reshape(-1)  # (B*S,): t predicts t + 1
    tokens = hidden.reshape(batch * seq, width)  # (B*S, H)
    total = sum(
        checkpoint(_summed_loss, head, x, y, use_reentrant=False)
        for x, y in zip(tokens.split(chunk_size), targets.split(chunk_size))
    )
    return total / (targets != IGNORE_INDEX).sum()


def _summed_loss(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The summed cross-entropy of one chunk: x (c, H), y (c,)."""
    logits = head(x)  # (c, V)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum")
