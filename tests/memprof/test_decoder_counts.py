"""Saved activations of the new decoder families (Llama, Qwen2, Mistral, GPT-2) against a second counting
method.

memprof counts with saved-tensor hooks. Here the count is taken another way, which the project
does not otherwise use: after the forward, walk the autograd graph from the loss and read every
node's saved tensors (``_saved_*`` attributes of built-in nodes, ``saved_tensors`` of custom
Functions), one per storage, parameters and buffers excluded, and Python numbers autograd wrapped as
0-dim CPU tensors skipped (they never reach the device; ``_python_number``). Both must agree to the byte.
"""

from __future__ import annotations

import json

import pytest
import torch

import memprof
from memprof import methods
from memprof.models import backbones, tasks

SEQ, BATCH = 16, 2
TINY = {
    "llama": {
        **backbones.builtin()["llama-3.2-1b"],
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "vocab_size": 64,
        "max_position_embeddings": 64,
    },
    "qwen2": {
        **backbones.builtin()["qwen2.5-0.5b"],
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 64,
        "max_position_embeddings": 64,
        "sliding_window": 64,
        "max_window_layers": 2,
    },
    "mistral": {
        **backbones.builtin()["mistral-7b"],
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 64,
        "max_position_embeddings": 64,
        "sliding_window": 8,
    },  # a window shorter than the sequence: the mask is a band
    "gpt2": {
        **backbones.builtin()["gpt2"],
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 4,
        "vocab_size": 64,
        "n_positions": 64,
        "n_ctx": 64,
    },
}


def graph_saved_bytes(loss: torch.Tensor, model: torch.nn.Module) -> int:
    """Bytes of the distinct storages the autograd graph of ``loss`` holds for backward."""
    params = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    storages: dict[int, int] = {}
    seen, todo = set(), [loss.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        saved = [getattr(node, name) for name in dir(node) if name.startswith("_saved_")]
        if hasattr(node, "saved_tensors"):  # a custom autograd.Function
            saved.append(node.saved_tensors)
        for value in saved:
            for t in value if isinstance(value, (tuple, list)) else [value]:
                if isinstance(t, torch.Tensor) and not _python_number(t):
                    s = t.untyped_storage()
                    if s.data_ptr() not in params and s.nbytes():
                        storages[s.data_ptr()] = s.nbytes()
        todo.extend(fn for fn, _ in node.next_functions)
    return sum(storages.values())


def _python_number(t: torch.Tensor) -> bool:
    """A Python number autograd wrapped (``x * 0.5``): a 0-dim float64/int64 CPU tensor, which stays on
    the CPU whatever the model's device and which saved-tensor hooks are never shown."""
    return t.dim() == 0 and t.dtype in (torch.float64, torch.int64) and t.device.type == "cpu"


@pytest.mark.parametrize("method", ["ft", "lora"])
@pytest.mark.parametrize("family", sorted(TINY))
def test_saved_activations_equal_the_graph_count(tmp_path, family, method):
    path = tmp_path / f"tiny-{family}.json"
    path.write_text(json.dumps(TINY[family]))
    result = memprof.profile(str(path), method, seq_len=SEQ, batch_size=BATCH, engine="cpu", attn="eager")
    assert result.status == "ok", result.message

    bb = backbones.resolve(str(path))
    torch.manual_seed(0)
    model = methods.get(method).apply(
        tasks.build_model(bb, bb.default_task, attn_implementation="eager"), bb, bb.default_task
    )
    model.train()
    batch = tasks.make_batch(bb, bb.default_task, BATCH, SEQ)
    torch.manual_seed(0)
    loss = model(**batch).loss
    assert graph_saved_bytes(loss, model) == result.memory.saved_activations > 0
