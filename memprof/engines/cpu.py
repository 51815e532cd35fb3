"""The cpu engine: one real training step on the CPU (random weights, or the real ones a
pretrained backbone ships), under the same instrumentation as the fake engine; also timed."""

from __future__ import annotations

import contextlib

import torch

from memprof.models import tasks
from memprof.engines import common
from memprof.engines.config import ProfileConfig
from memprof.engines.common import Built, adamw, instrumented_step, make_result
from memprof.instrument.attention import attention_name
from memprof.results.result import Result


def build(config: ProfileConfig) -> Built:
    return common.build(config, "cpu")


def forward_context(config: ProfileConfig, device_type: str):
    if config.autocast_dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type, dtype=config.autocast_dtype)


def run(built: Built, config: ProfileConfig) -> Result:
    torch.manual_seed(config.seed)
    batch = tasks.make_batch(config.resolved, config.task, config.batch_size, config.seq_len, seed=config.seed)
    optimizer = adamw(built.model, foreach=False)
    common.prepare(built.model, optimizer, config.step)
    measurement, seconds = instrumented_step(built.model, batch, optimizer, forward_context(config, "cpu"),
                                             loss=config.loss)
    del optimizer, batch
    attn = attention_name(measurement.attention_kernels, config.attn, observed=True)
    return make_result(config, built, measurement, attn, step_time=seconds)
