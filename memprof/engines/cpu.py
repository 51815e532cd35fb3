"""The cpu engine: one real training step on the CPU (random weights, or the real ones a
pretrained backbone ships), under the same instrumentation as the fake engine; also timed."""

from __future__ import annotations

from memprof.engines import common
from memprof.engines.base import Engine
from memprof.engines.common import Built
from memprof.engines.config import ProfileConfig


def build(config: ProfileConfig) -> Built:
    return common.build(config, "cpu")


class CpuEngine(Engine):
    """A real step on this machine's CPU: every default of ``Step`` (NOTE [ One step, every engine ])."""

    name = "cpu"
    targets = ("cpu",)
    allocates = True

    def build(self, config: ProfileConfig) -> Built:
        return build(config)


ENGINE = CpuEngine()
