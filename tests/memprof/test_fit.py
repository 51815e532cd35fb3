"""``memprof fit``: each answer fits its budget by an independent fake-engine profile and one more
does not; the search takes a handful of profiles; the JSON, the plot data and bad input."""

import json
import math

import pytest
import torch

import memprof
from memprof.engines import ModelCache
from memprof.errors import MemprofError
from memprof.fit import search as fit
from memprof.fit.bisection import search
from memprof.fit.search import FitConfig

BUDGET = 400_000  # bytes: batch sizes around 5 to 12 at sequence length 16 (ft 372,792 bytes at batch 8)


def required(peak: int, fragmentation: float = 0.1, context: int = 0) -> int:
    """NOTE [ What fit counts ] for one rank without sharding: the step's peak, the margin, the context."""
    return peak + math.ceil(peak * fragmentation) + context


# -- the search on a known function ----------------------------------------------------------------


def counting(need):
    asked = []

    def counted(n):
        asked.append(n)
        return need(n)

    return counted, asked


def test_linear_memory_is_found_with_four_profiles():
    need, asked = counting(lambda b: 100 + 37 * b)  # 100 + 37 b <= 1000: b <= 24.3
    assert search(need, 1000, (1, 2), 1 << 16) == (24, "budget") and asked == [1, 2, 24, 25]


@pytest.mark.parametrize(
    "need, answer",
    [
        (lambda b: 3 * b * b + 10, 18),  # 3 b^2 + 10 <= 1000: b <= 18.2
        (lambda b: 900 if b < 40 else 860 + b, 140),  # flat until b = 40 (a peak elsewhere), then linear
        (lambda b: 10 + b // 7, 6936),  # steps: 10 + floor(b / 7) <= 1000: b <= 6936
        (lambda b: 2 ** min(b, 60), 9),  # exponential
    ],
)
def test_any_monotone_memory_is_found_in_few_profiles(need, answer):
    need, asked = counting(need)
    assert search(need, 1000, (1, 2), 1 << 16) == (answer, "budget")
    assert len(asked) == len(set(asked)) <= 24 and answer in asked and answer + 1 in asked


def test_nothing_fits_and_the_cap_fits():
    need, asked = counting(lambda b: 2000)
    assert search(need, 1000, (1, 2), 100) == (0, "budget") and asked == [1]
    need, asked = counting(lambda b: b)
    assert search(need, 1000, (8, 16), 32) == (32, "cap") and asked == [8, 16, 32]
    need, _ = counting(lambda b: 200 * b)  # the first probe is already too long: search below it
    assert search(need, 1000, (8, 16), 32) == (5, "budget")


# -- fit on a real (tiny) backbone, checked by independent profiles -----------------------------------


@pytest.fixture(scope="module")
def answers(tiny_opt):
    config = FitConfig(tiny_opt, ["ft", "lora", "meft"], BUDGET, seq_len=16, context=0)
    return config, fit.fit(config)


def test_every_answer_fits_and_one_more_does_not(tiny_opt, answers):
    config, answers = answers
    assert [a.method for a in answers] == ["ft", "lora", "meft"]
    for a in answers:
        at, over = (
            memprof.profile(tiny_opt, a.method, seq_len=16, batch_size=b, step="steady") for b in (a.value, a.value + 1)
        )
        assert required(at.memory.peak) <= BUDGET < required(over.memory.peak), a.method
        assert a.limit == "budget" and a.at.required == required(at.memory.peak) and len(a.points) <= 7
        assert fit.weight_bytes(config, a.method) == at.memory.parameters
        d = a.to_dict()
        assert d["max_batch_size"] == d["micro_batch_size"] == a.value and d["memory"]["step_peak"] == at.memory.peak
        assert d["memory"]["parameters"] == at.memory.parameters and d["memory"]["context"] == 0
        first = memprof.profile(tiny_opt, a.method, seq_len=16, batch_size=a.value, step="first")
        assert d["first_step_peak"] == first.memory.peak < at.memory.peak  # AdamW's state is the difference
    by = {a.method: a.value for a in answers}
    assert by["meft"] > by["lora"] > by["ft"]
    assert fit.curve_data(answers)["ft"] == [(n, answers[0].points[n].required) for n in sorted(answers[0].points)]


# every day the sequence-length case; the CLI tests fit batch sizes from the closed form every day too
@pytest.mark.matrix(keep=lambda p: p["searched"] == "seq_len")
@pytest.mark.parametrize("searched, methods", [("batch_size", ["ft", "meft"]), ("seq_len", ["lora"])])
def test_the_closed_form_finds_the_profile_search_answer_and_confirms_it(tiny_opt, tmp_path, searched, methods):
    from memprof.engines import ModelCache, run
    from memprof.engines.formula_cache import FormulaCache

    size = {"seq_len": 16} if searched == "batch_size" else {"batch_size": 8}
    budget = BUDGET if searched == "batch_size" else 250_000
    config = FitConfig(tiny_opt, methods, budget, context=0, **size)
    cache = FormulaCache(tmp_path)
    profiled = fit.fit(config)
    solved = fit.fit(config, formulas=cache)
    models = ModelCache()
    for p, s in zip(profiled, solved):
        assert (s.value, s.limit, s.at.required, s.first_step.step) == (
            p.value,
            p.limit,
            p.at.required,
            p.first_step.step,
        )
        assert s.over.required == p.over.required and s.evaluated > 0
        # what the formula answered equals a profile, and the answer and one above were profiled
        for n, point in s.points.items():
            measured = run(config.profile_config(s.method, n, "steady"), models)
            assert point.required == fit._point(config, n, measured).required
        assert "closed_form" not in s.at.result.environment and "closed_form" not in s.over.result.environment
    assert len(list(tmp_path.iterdir())) == len(methods)  # the confirmed formulas are cached
    again = fit.fit(config, formulas=cache)
    assert [a.value for a in again] == [a.value for a in profiled]


def test_a_cached_formula_leaves_out_the_probe_outside_its_bounds(tiny_opt, tmp_path):
    from memprof.engines.formula_cache import FormulaCache

    # a causal LM's formula holds from b = 2: once cached, the search starts there (b = 2 fits, so
    # b = 1 does); the first run profiled b = 1 before it had a formula
    config = FitConfig(tiny_opt, ["lora"], BUDGET, seq_len=16, context=0, task="causal-lm")
    [cold] = fit.fit(config, formulas=FormulaCache(tmp_path))
    [warm] = fit.fit(config, formulas=FormulaCache(tmp_path))
    [profiled] = fit.fit(config)
    assert cold.value == warm.value == profiled.value > 2
    assert 1 in cold.points and 1 in profiled.points and 1 not in warm.points
    assert warm.profiles == 2 and cold.profiles == 3  # the answer and the size above it; cold: and b = 1
    assert warm.at.required == cold.at.required == profiled.at.required
    assert warm.over.required == cold.over.required == profiled.over.required


def test_a_fit_answered_by_a_cached_formula_imports_no_symbolic_machinery(tiny_opt, tmp_path):
    import subprocess
    import sys

    from memprof.engines.formula_cache import FormulaCache

    config = FitConfig(tiny_opt, ["lora"], BUDGET, seq_len=16, context=0, task="causal-lm")
    [cold] = fit.fit(config, formulas=FormulaCache(tmp_path))
    code = (
        "import sys\n"
        "from memprof.engines.formula_cache import FormulaCache\n"
        "from memprof.fit import search as fit\n"
        f"config = fit.FitConfig({tiny_opt!r}, ['lora'], {BUDGET}, seq_len=16, context=0, task='causal-lm')\n"
        f"[warm] = fit.fit(config, formulas=FormulaCache({str(tmp_path)!r}))\n"
        "print(warm.value, warm.evaluated > 0, 'memprof.engines.symbolic' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [str(cold.value), "True", "False"]


def test_each_method_model_is_built_once(tiny_opt, monkeypatch):
    from memprof.engines import fake

    # the weights' check, the steady search and the first-step profile share one model per method
    built = []
    real = fake.build
    monkeypatch.setattr(fake, "build", lambda config: built.append(config.method) or real(config))
    answers = fit.fit(FitConfig(tiny_opt, ["ft", "lora"], BUDGET, seq_len=16, context=0))
    assert all(a.value > 0 and a.first_step is not None for a in answers)
    assert sorted(built) == ["ft", "lora"]


def test_a_sequence_length_below_the_smallest_probe_is_searched_with_the_formula(tiny_opt, tmp_path, monkeypatch):
    from memprof.engines import symbolic
    from memprof.engines.formula_cache import FormulaCache

    # searching the sequence length, the smallest probe is s > 1: when it does not fit, shorter
    # lengths may, so the search goes on with the method's formula (a batch of one that does not fit
    # ends it without one); the answer is the profile search's
    traced = []
    real = symbolic.derive
    monkeypatch.setattr(symbolic, "derive", lambda *a, **k: traced.append(a) or real(*a, **k))
    probe = FitConfig(tiny_opt, ["lora"], BUDGET, batch_size=8, context=0)
    s = fit._probes(probe)[0]
    assert s > 2
    below = fit._measure(probe, "lora", s // 2, "steady", None, ModelCache()).required
    config = FitConfig(tiny_opt, ["lora"], below, batch_size=8, context=0)
    [closed] = fit.fit(config, formulas=FormulaCache(tmp_path))
    [profiled] = fit.fit(config)
    assert len(traced) == 1
    assert closed.value == profiled.value and s // 2 <= closed.value < s
    assert closed.at.required == profiled.at.required and closed.over.required == profiled.over.required


def test_nothing_fits_is_profiled_and_no_unconfirmed_formula_is_cached(tiny_opt, tmp_path, monkeypatch):
    from memprof.engines import symbolic
    from memprof.engines.formula_cache import FormulaCache

    traced = []
    real = symbolic.derive
    monkeypatch.setattr(symbolic, "derive", lambda *a, **k: traced.append(a) or real(*a, **k))
    # the smallest probe is profiled before any trace: b = 1 does not fit, so the answer is 0 with no
    # formula derived, and nothing is cached
    config = FitConfig(tiny_opt, ["lora"], 60_000, seq_len=16, context=0, task="causal-lm")
    [answer] = fit.fit(config, formulas=FormulaCache(tmp_path))
    assert traced == []
    [profiled] = fit.fit(config)
    assert answer.value == profiled.value == 0 and answer.profiles == 1 and answer.evaluated == 0
    assert sorted(answer.points) == [1] and answer.points[1].required == profiled.points[1].required
    assert not list(tmp_path.iterdir())


def test_a_closed_form_the_confirmation_contradicts_leaves_the_method_to_profiles(
    tiny_opt, tmp_path, monkeypatch, capsys
):
    from memprof.engines.formula_cache import FormulaCache
    from memprof.results import formula as formula_module

    real = formula_module.Formula.memory_at

    def less(self, b, s):
        m = real(self, b, s)
        m.peak -= 1_000
        return m

    monkeypatch.setattr(formula_module.Formula, "memory_at", less)
    config = FitConfig(tiny_opt, ["lora"], BUDGET, seq_len=16, context=0)
    steady = []  # every steady-step profile taken: the profile search reuses those taken before it
    [answer] = fit.fit(
        config, lambda m, n, step: steady.append(n) if step == "steady" else None, FormulaCache(tmp_path)
    )
    monkeypatch.setattr(formula_module.Formula, "memory_at", real)
    [profiled] = fit.fit(config)
    assert answer.value == profiled.value and answer.evaluated == 0
    assert len(steady) == len(set(steady)) == answer.profiles and set(steady) == set(answer.points)
    assert answer.at.required == profiled.at.required and answer.over.required == profiled.over.required
    err = capsys.readouterr().err
    assert "warning: fit lora: the closed form disagrees with the profile at" in err and "profiling instead" in err
    assert not list(tmp_path.iterdir())


def test_sequence_length_over_sharded_ranks(tiny_opt):
    # Global batch 8 over 4 ranks: each runs a micro-batch of 2; zero3 divides parameters,
    # gradients and optimizer state by 4 (rounded up); activations and temporaries are one rank's.
    budget = 60_000
    config = FitConfig(
        tiny_opt, ["lora"], budget, batch_size=8, world_size=4, shard="zero3", context=0, fragmentation=0.0
    )
    (a,) = fit.fit(config)
    assert a.searched == "seq_len" and 1 <= a.value < 30

    def per_rank(seq_len):
        m = memprof.profile(tiny_opt, "lora", seq_len=seq_len, batch_size=2, step="steady").memory
        shard = sum(-(-x // 4) for x in (m.parameters, m.gradients, m.optimizer_state))
        return shard + m.activations_at_peak + m.temporaries

    assert per_rank(a.value) <= budget < per_rank(a.value + 1)
    assert a.to_dict()["max_seq_len"] == a.value and "micro_batch_size" not in a.to_dict()


def test_the_cap_is_the_backbones_positions(tiny_opt):
    (a,) = fit.fit(FitConfig(tiny_opt, ["meft"], 10**9, batch_size=1, context=0))
    assert (a.value, a.limit, a.over) == (32, "cap", None)


@pytest.mark.parametrize(
    "kwargs, says",
    [
        (dict(seq_len=16, batch_size=4), "both --seq-len 16 and --batch-size 4 are fixed"),
        (dict(world_size=0), "world size 0 must be a whole number of at least 1"),
        (dict(batch_size=6, world_size=4), "batch size 6 does not split over world size 4"),
        (dict(fragmentation=1.0), "fragmentation 1.0 must be a fraction"),
        (dict(shard="zero9"), "unknown shard scheme 'zero9'"),
        (dict(methods=["ft", "nope"]), "unknown method 'nope'"),
        (dict(methods=["meft", "meft1"]), "method 'meft' is an alias of 'meft1' and both are in --methods"),
    ],
)
def test_bad_configs(tiny_opt, kwargs, says):
    with pytest.raises(MemprofError, match=says):
        FitConfig(tiny_opt, kwargs.pop("methods", ["ft"]), BUDGET, **kwargs)


# -- the command line ----------------------------------------------------------------------------------


def test_cli_table_json_and_png(cli, tiny_opt, tmp_path, answers):
    code, out, err = cli(
        "fit",
        "--backbone",
        tiny_opt,
        "--methods",
        "lora,meft",
        "--budget",
        str(BUDGET),
        "--seq-len",
        "16",
        "--context",
        "0",
        "--json",
        tmp_path / "fit.json",
        "--png",
        tmp_path / "f.png",
    )
    assert code == 0, err
    doc = json.loads((tmp_path / "fit.json").read_text())
    answers = answers[1][1:]  # the same answers, lora and meft, from the closed form confirmed by profiles
    for got, a in zip(doc["methods"], answers):
        want = a.to_dict()
        assert got["profiles"] + got["evaluated"] >= 2 and got["evaluated"] > 0 and want["evaluated"] == 0
        assert {k: v for k, v in got.items() if k not in ("profiles", "evaluated")} == {
            k: v for k, v in want.items() if k not in ("profiles", "evaluated")
        }
    assert (doc["budget"], doc["searched"], doc["step"], doc["counts"]) == (BUDGET, "batch_size", "steady", fit.COUNTS)
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for a in answers:
        assert f"{a.method} " in out and f" {a.value} " in out
    for a in answers:  # the progress names each profile: the confirmations and the first step
        for line in (
            f"at batch size {a.value}",
            f"at batch size {a.value + 1}",
            f"at batch size {a.value} (first step)",
        ):
            assert f"profiling {a.method} {line}\n" in err
    assert "profiling lora at batch size 1\n" in err  # no formula cached yet: the smallest probe first


def one_line_error(result, says):
    code, out, err = result
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert says in err


@pytest.mark.parametrize(
    "args, says",
    [
        (
            ["--budget", "20000", "--seq-len", "16"],
            "budget 19.5 KiB is smaller than tiny-opt's weights under ft (23.6 KiB",
        ),
        (
            ["--gpu", "v100"],
            "unknown GPU 'v100'; use one of a100-40gb, a100-80gb, h100-80gb, h200, a6000, rtx4090, l4, t4",
        ),
        (
            ["--budget", "1GiB", "--seq-len", "16", "--batch-size", "4"],
            "both --seq-len 16 and --batch-size 4 are fixed",
        ),
        (["--budget", "1GiB", "--world-size", "0"], "world size 0 must be a whole number of at least 1"),
        (["--budget", "1GiB", "--gpu", "t4"], "pass one of --budget"),
        (["--budget", "-3GB"], "budget '-3GB' is a negative size"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(cli, tiny_opt, args, says):
    one_line_error(cli("fit", "--backbone", tiny_opt, "--methods", "ft", "--context", "0", *args), says)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_budget_auto_without_a_gpu(cli, tiny_opt):
    one_line_error(cli("fit", "--backbone", tiny_opt, "--budget", "auto"), "--budget auto")
