"""MEFTConfig: defaults per variant, validation messages, JSON round-trip, help strings."""

from dataclasses import fields

import pytest

from meft import VARIANTS, MEFTConfig, MEFTError


@pytest.mark.parametrize(
    ("variant", "lam", "beta", "swap"),
    [
        ("meft1", 0.1, 1.0, True),
        ("meft2", 1.0, 0.1, True),
        ("meft3", 0.1, 0.1, False),
    ],
)
def test_variant_defaults(variant, lam, beta, swap):
    cfg = MEFTConfig(variant=variant, arithmetic="float")
    assert (cfg.effective_lam, cfg.effective_beta, cfg.spec.swap) == (lam, beta, swap)
    assert (cfg.lam, cfg.beta) == (None, None)
    assert (cfg.adapter_dim, cfg.init_std, cfg.adapter_dropout, cfg.num_rev_layers) == (8, 0.02, 0.1, None)
    # exact arithmetic (the default) uses the nearest multiple of 1/256: 0.1 -> 26/256 = 13/128
    exact = MEFTConfig(variant=variant)
    assert exact.arithmetic == "exact"
    assert (exact.effective_lam, exact.effective_beta) == tuple(13 / 128 if v == 0.1 else v for v in (lam, beta))


def test_exact_scales_are_reported_as_fractions():
    assert MEFTConfig(variant="meft1").describe_scales() == "lam=13/128 (0.1015625), beta=1"
    assert MEFTConfig(variant="meft3").describe_scales() == "lam=13/128 (0.1015625), beta=13/128 (0.1015625)"
    assert MEFTConfig(variant="meft1", arithmetic="float").describe_scales() == "lam=0.1, beta=1.0"
    # user values are rounded the same way: 0.3 * 256 = 76.8 -> 77/256; 0.5 -> 1/2; -0.25 -> -1/4
    assert MEFTConfig(lam=0.3).describe_scales().startswith("lam=77/256 (0.30078125)")
    assert MEFTConfig(lam=0.5).scales()[0].k == 1 and MEFTConfig(lam=-0.25).effective_lam == -0.25


def test_explicit_lam_beta_override_the_variant():
    cfg = MEFTConfig(variant="meft1", lam=1.0, beta=1.0)
    assert (cfg.effective_lam, cfg.effective_beta) == (1.0, 1.0)


def test_variant_is_case_insensitive():
    assert MEFTConfig(variant="MEFT2").variant == "meft2"


@pytest.mark.parametrize(
    ("kwargs", "needles"),
    [
        ({"lam": 0}, ["lam=0 ", "invert", "non-zero"]),
        ({"beta": 0.0}, ["beta=0", "invert", "non-zero"]),
        ({"lam": float("nan")}, ["lam=nan", "finite"]),
        ({"adapter_dim": 0}, ["adapter_dim=0", ">= 1", "adapter_dim=8"]),
        ({"adapter_dim": 2.5}, ["adapter_dim=2.5", "integer"]),
        ({"variant": "meft4"}, ["'meft4'", "meft1, meft2, meft3"]),
        ({"num_rev_layers": -1}, ["num_rev_layers=-1", ">= 0", "None"]),
        ({"merge": "sum"}, ["'sum'", "mean, plm"]),
        ({"adapter_dropout": 1.0}, ["adapter_dropout=1.0", "[0, 1)"]),
        ({"init_std": -0.1}, ["init_std=-0.1", ">= 0"]),
        ({"arithmetic": "fixed"}, ["'fixed'", "exact, float"]),
        ({"lam": -0.0}, ["lam=-0.0", "non-zero"]),
        ({"beta": float("inf")}, ["beta=inf", "finite"]),
        (
            {"lam": 1 / 512},
            ["lam=0.001953125", "more than 8 discarded bits", "1/256", "|lam| >= 0.00390625", "arithmetic='float'"],
        ),
        ({"beta": 1.5}, ["beta=1.5", "[-1, 1]", "arithmetic='float'"]),
    ],
)
def test_invalid_values_name_value_constraint_and_fix(kwargs, needles):
    with pytest.raises(MEFTError) as info:
        MEFTConfig(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_float_arithmetic_takes_any_non_zero_scale():
    assert MEFTConfig(lam=1 / 512, beta=1.5, arithmetic="float").scales() == (1 / 512, 1.5)


def test_dict_and_json_round_trip():
    cfg = MEFTConfig(variant="meft3", adapter_dim=4, lam=0.5, num_rev_layers=2, merge="mean")
    assert MEFTConfig.from_dict(cfg.to_dict()) == cfg
    assert MEFTConfig.from_json(cfg.to_json()) == cfg
    assert cfg.to_dict()["lam"] == 0.5 and cfg.to_dict()["beta"] is None


def test_from_dict_rejects_unknown_fields_and_bad_json():
    with pytest.raises(MEFTError, match="no field.*'rank'"):
        MEFTConfig.from_dict({"variant": "meft1", "rank": 8})
    with pytest.raises(MEFTError, match="not valid"):
        MEFTConfig.from_json("{")


def test_every_field_has_help():
    for f in fields(MEFTConfig):
        assert len(f.metadata.get("help", "")) > 10, f.name


def test_plm_stream_per_variant():
    # NOTE [ Which stream carries the PLM ] in meft/config.py
    assert {k: v.plm_stream for k, v in VARIANTS.items()} == {"meft1": 1, "meft2": 0, "meft3": 1}


NAN, INF = float("nan"), float("inf")
# field -> wrong values of every kind (wrong type, bool for a number, NaN/inf, out of range, unknown choice),
# and the message each gets, {v} standing for the value's repr. NOTE [ Validating MEFTConfig ] in meft/config.py.
WRONG = {
    "variant": (
        [1, None, True, "meft0"],
        "variant {v} is unknown; use one of meft1, meft2, meft3, e.g. variant='meft1'",
    ),
    "adapter_dim": (["8", 8.0, True, 0, -3, None], "adapter_dim={v} must be an integer >= 1; pass e.g. adapter_dim=8"),
    "lam": (
        ["0.1", True, NAN, -INF, [0.1]],
        "lam={v} must be None or a finite number; pass a float such as lam=0.1, or None for the variant's default",
    ),
    "beta": (
        ["1", False, INF, NAN],
        "beta={v} must be None or a finite number; pass a float such as beta=0.1, or None for the variant's default",
    ),
    "num_rev_layers": (
        ["2", 2.0, True, False, -1],
        "num_rev_layers={v} must be None (all layers) or an integer >= 0; "
        "pass e.g. num_rev_layers=6, or 0 for ordinary backprop",
    ),
    "adapter_dropout": (
        ["abc", "0.1", True, False, NAN, INF, -0.1, 1.0, 10**400, None],
        "adapter_dropout={v} must be a number in [0, 1); pass e.g. adapter_dropout=0.1",
    ),
    "init_std": (
        ["0.02", True, NAN, INF, -0.1, None],
        "init_std={v} must be a finite number >= 0; pass e.g. init_std=0.02",
    ),
    "merge": ([3, None, "sum", ""], "merge {v} is unknown; use one of mean, plm, e.g. merge='mean'"),
    "cache_top_layer": (
        [1, 0, "yes", 1.0],
        "cache_top_layer={v} must be True, False or None (= False); pass e.g. cache_top_layer=False",
    ),
    "arithmetic": (
        [None, 1, "fixed", b"exact"],
        "arithmetic {v} is unknown; use one of exact, float, e.g. arithmetic='exact'",
    ),
}


def test_every_field_has_wrong_value_cases():
    assert set(WRONG) == {f.name for f in fields(MEFTConfig)}


@pytest.mark.parametrize(
    ("name", "value"), [(n, v) for n, (values, _) in WRONG.items() for v in values], ids=lambda x: repr(x)[:20]
)
def test_wrong_values_of_every_field_raise_naming_field_value_constraint_and_fix(name, value):
    with pytest.raises(MEFTError) as info:
        MEFTConfig(**{name: value})
    assert str(info.value) == WRONG[name][1].replace("{v}", repr(value))


def test_numbers_of_other_types_are_stored_as_plain_python_values():
    np = pytest.importorskip("numpy")
    cfg = MEFTConfig(
        adapter_dim=np.int64(4),
        num_rev_layers=np.int32(1),
        lam=1,
        beta=np.float32(0.5),
        adapter_dropout=0,
        init_std=np.float64(0.01),
        merge="MEAN",
        arithmetic="Float",
    )
    values = cfg.to_dict()
    assert values == {
        **MEFTConfig().to_dict(),
        "adapter_dim": 4,
        "num_rev_layers": 1,
        "lam": 1.0,
        "beta": 0.5,
        "adapter_dropout": 0.0,
        "init_std": 0.01,
        "merge": "mean",
        "arithmetic": "float",
    }
    assert [
        type(values[k]) for k in ("adapter_dim", "num_rev_layers", "lam", "beta", "adapter_dropout", "init_std")
    ] == [int, int, float, float, float, float]
    assert MEFTConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("data", [None, [["variant", "meft1"]], "meft1"])
def test_from_dict_rejects_what_is_not_a_dict(data):
    with pytest.raises(MEFTError, match=f"of type {type(data).__name__} is not a dict; pass MEFTConfig.to_dict"):
        MEFTConfig.from_dict(data)
