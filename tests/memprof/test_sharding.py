"""The scale-out arithmetic of ``memprof.fit.sharding`` (ZeRO, Rajbhandari et al. 2020), by hand."""

import pytest

from memprof.errors import MemprofError
from memprof.fit.sharding import SHARDS, per_rank

# The ZeRO paper's own example (section 5.1, figure 1): a 7.5B-parameter model, mixed precision
# Adam: 2 bytes a parameter (fp16), 2 a gradient, K = 12 of optimizer state (fp32 master weights,
# momentum, variance), on 64 GPUs.
PSI = 7_500_000_000
P, G, O = 2 * PSI, 2 * PSI, 12 * PSI  # noqa: E741 - the ZeRO paper's names


@pytest.mark.parametrize(
    "shard, expected_gb",
    [
        ("none", 120.0),  # (2 + 2 + 12) x 7.5B
        ("zero1", 31.4),  # 2 x 7.5 + 2 x 7.5 + 12 x 7.5 / 64 = 15 + 15 + 1.40625
        ("zero2", 16.6),  # 15 + (2 + 12) x 7.5 / 64 = 15 + 1.640625
        ("zero3", 1.9),  # 16 x 7.5 / 64 = 1.875
    ],
)
def test_the_papers_figure_1(shard, expected_gb):
    rank = per_rank(P, G, O, 64, shard)
    assert round(rank.total / 1e9, 1) == expected_gb


def test_each_scheme_divides_what_it_shards():
    # 1000 parameter bytes, 500 gradient bytes, 2001 optimizer bytes over 4 ranks: shares round up
    assert per_rank(1000, 500, 2001, 4, "none") == per_rank(1000, 500, 2001, 1, "zero3")
    assert (per_rank(1000, 500, 2001, 4, "none").parameters, per_rank(1000, 500, 2001, 4, "none").optimizer_state) == (
        1000,
        2001,
    )
    z1, z2, z3 = (per_rank(1000, 500, 2001, 4, s) for s in ("zero1", "zero2", "zero3"))
    assert (z1.parameters, z1.gradients, z1.optimizer_state) == (1000, 500, 501)  # ceil(2001 / 4) = 501
    assert (z2.parameters, z2.gradients, z2.optimizer_state) == (1000, 125, 501)
    assert (z3.parameters, z3.gradients, z3.optimizer_state) == (250, 125, 501)
    assert z3.total == 876 and z3.buckets == 0


def test_ddp_buckets_only_with_more_than_one_rank_and_no_sharding():
    assert per_rank(1000, 500, 2000, 2, "none", ddp_buckets=400).total == 1000 + 500 + 2000 + 400
    assert per_rank(1000, 500, 2000, 1, "none", ddp_buckets=400).buckets == 0  # one process: no DDP
    assert per_rank(1000, 500, 2000, 2, "zero1", ddp_buckets=400).buckets == 0


@pytest.mark.parametrize(
    "world_size, shard, says",
    [
        (0, "none", "world size 0 must be a whole number of at least 1"),
        (-3, "zero3", "world size -3 must be a whole number of at least 1"),
        (True, "none", "world size True must be"),
        (2, "zero4", f"unknown shard scheme 'zero4'; use one of {', '.join(SHARDS)}"),
    ],
)
def test_bad_world_size_or_scheme(world_size, shard, says):
    with pytest.raises(MemprofError, match=says):
        per_rank(1, 1, 1, world_size, shard)
