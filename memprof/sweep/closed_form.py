"""The closed form behind ``memprof compare``: a sweep's results from each method's checked formula
(``Formula``) instead of one profile per configuration.

NOTE [ A checked closed form ]
Per method, the formula comes from the formula cache (``memprof.engines.formula_cache``: a formula
that already passed its check) or is derived (``engines.symbolic.derive``: one symbolic trace,
traces of shallow copies of a deep model composed, or a fit) and checked: the largest configuration
of the grid that the formula covers, where a wrong term shows most, is profiled for real with the
fake engine, and that profile is its result. If the two agree in every byte (the Memory fields, the
per-module table) the formula is stored in the cache; every other configuration of the grid is the
formula evaluated at its batch size and sequence length (``environment["closed_form"]`` says
"symbolic" or "fitted"), except those outside the sizes where it holds (``Formula.bounds``: a batch
of one can take other branches than the trace; and its conditions, ``Formula.valid``, e.g. an
attention bias padded only where s + 20 is no multiple of 8), which are profiled. A cached traced
formula holds wherever its bounds say and answers without a profile; a cached fitted one was solved
from small sizes, so it is checked again when the grid reaches beyond the size its check profiled.
The formula used is written to ``<out>/formulas/<method>.json`` for the report.

A formula that is not in the cache costs a trace, and a trace costs about as much as
``TRACE_COST`` profiles (bart-large: a 14 s trace against 2.8 s a profile, timed once on 2 cores,
2026-12-07), so a method with fewer configurations in the grid than that is profiled throughout
instead: the regression
gate's two sizes per method, a quick two-point look. Results are the same bytes either way.

A method whose formula cannot be derived or disagrees with its check profile is not trusted: every
configuration of it is profiled (``environment["closed_form_fallback"]`` says why on each), nothing
is cached, and ``compare`` says so; the sweep does not fail. The runner is a plain picklable object,
so parallel sweeps use it as they use ``engines.run``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memprof.engines.config import ProfileConfig
from memprof.engines.formula_cache import FormulaCache
from memprof.engines.formula_fit import disagreement_with
from memprof.engines.registry import traceable
from memprof.errors import MemprofError, one_line
from memprof.results.files import BadJSON, parse_json, write_atomically
from memprof.results.formula import EVALUATED_KEY, FALLBACK_KEY, Formula
from memprof.results.result import Result, environment

FORMULAS_DIR = "formulas"
#: a trace costs about this many profiles: a method with fewer configurations and no cached formula is profiled
TRACE_COST = 5


class ClosedFormRunner:
    """``run(config, cache) -> Result`` for ``run_sweep``, evaluating each method's checked formula."""

    def __init__(self, configs: list[ProfileConfig], out_dir: str | Path, formulas: FormulaCache | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.formulas = formulas if formulas is not None else FormulaCache(None)
        #: method -> its configurations in the grid
        self.configs: dict[str, list[ProfileConfig]] = {}
        for c in configs:
            self.configs.setdefault(c.method, []).append(c)
        self._formulas: dict[str, Formula] = {}
        self._checked: dict[str, Result] = {}
        self._fallback: dict[str, str] = {}
        self._profiled: set[str] = set()  # cheaper to profile than to trace (TRACE_COST), or no size covered
        self._models: Any = None  # a ModelCache, made where the runner runs (a worker: after pickling)

    def __call__(self, config: ProfileConfig, cache: Any = None) -> Result:
        from memprof.engines import ModelCache, run

        if cache is None:
            cache = self._models = self._models or ModelCache()
        if not traceable(config.engine):
            raise MemprofError(
                f"the closed form models the fake engine's step; engine {config.engine!r} profiles every "
                "configuration: pass --profile-all, or use --engine fake"
            )
        method = config.method
        if method not in self._formulas and method not in self._fallback and method not in self._profiled:
            self._derive_and_check(config, cache)
        checked = self._checked.get(method)
        if checked is not None and (checked.batch_size, checked.seq_len) == (config.batch_size, config.seq_len):
            return checked
        if method in self._fallback:
            return _marked(run(config, cache), self._fallback[method])
        formula = self._formulas.get(method)
        if formula is None or not formula.covers(config.batch_size, config.seq_len):
            return run(config, cache)  # where the trace's branches differ (a batch of one), or not worth a trace
        return evaluate(formula, config)

    def prefetch(self) -> bool:
        """Take every method's cached formula that needs no check here; True when that is every
        method (nothing left to trace or profile but sizes outside a formula's bounds)."""
        for method, configs in self.configs.items():
            entry = self.formulas.lookup(configs[0]) if method not in self._formulas else None
            if entry is not None and not _needs_check(*entry, configs):
                self._keep(method, entry[0])
        return all(method in self._formulas for method in self.configs)

    def _derive_and_check(self, config: ProfileConfig, cache: Any) -> None:
        """The method's formula, from the cache or derived, and checked where it must be, before any
        result is given."""
        from memprof.engines import run

        method, configs = config.method, self.configs.get(config.method, [config])
        entry = self.formulas.lookup(config)
        if entry is not None and not _needs_check(*entry, configs):
            self._keep(method, entry[0])
            return
        if entry is None and len(configs) < TRACE_COST:
            self._profiled.add(method)
            return
        if entry is not None:
            formula = entry[0]
        else:
            # imported only here: about a second of imports that a cached formula or a method profiled
            # throughout (the gate's) never needs
            from memprof.engines.symbolic import derive

            try:
                formula = derive(config, profile=lambda c: run(c, cache))
            except Exception as exc:  # noqa: BLE001 - any failure to derive: profile instead, and say why
                self._fallback[method] = f"it has no closed form ({one_line(exc)})"
                return
        check = _largest([c for c in configs if formula.covers(c.batch_size, c.seq_len)])
        if check is None:  # every size of the grid lies outside the formula's bounds
            self._profiled.add(method)
            return
        measured = self._checked[method] = run(check, cache)
        difference = "" if measured.status != "ok" else disagreement_with(formula, measured)
        if measured.status != "ok":
            self._fallback[method] = f"its check profile ended {measured.status}"
        elif difference:
            self._fallback[method] = f"its closed form disagrees with its check profile: {difference}"
        if method in self._fallback:
            self._checked[method] = _marked(measured, self._fallback[method])
            if entry is not None and difference:
                self.formulas.discard(config)
            return
        self._keep(method, formula)
        self.formulas.put(config, formula, check)

    def _keep(self, method: str, formula: Formula) -> None:
        self._formulas[method] = formula
        folder = self.out_dir / FORMULAS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(folder / f"{_safe(method)}.json", json.dumps(formula.to_dict(), ensure_ascii=False))


def _largest(configs: list[ProfileConfig]) -> ProfileConfig | None:
    """The configuration where a wrong term shows most: the largest b·s, then s."""
    return max(configs, key=lambda c: (c.batch_size * c.seq_len, c.seq_len), default=None)


def _needs_check(formula: Formula, checked_at: tuple[int, int], configs: list[ProfileConfig]) -> bool:
    """A traced formula holds at every size within its bounds, so its one check stands; a fitted one
    was solved from small sizes, so a grid that reaches beyond the size its check profiled is
    checked again at its own largest."""
    if formula.how == "symbolic":
        return False
    largest = _largest([c for c in configs if formula.covers(c.batch_size, c.seq_len)])
    b, s = checked_at
    return largest is not None and (largest.batch_size * largest.seq_len > b * s or largest.seq_len > s)


def _marked(result: Result, why: str) -> Result:
    result.environment = {**result.environment, FALLBACK_KEY: f"profiled: {why}"}
    return result


def evaluate(formula: Formula, config: ProfileConfig) -> Result:
    """The Result a profile of ``config`` gives, from its method's formula."""
    b, s = config.batch_size, config.seq_len
    return Result(
        backbone=config.backbone,
        method=config.method,
        engine=config.engine,
        target=config.target,
        dtype=config.dtype,
        seq_len=s,
        batch_size=b,
        task=config.task,
        step=config.step,
        loss=config.loss,
        attn_implementation=formula.attn_implementation,
        trainable_params=formula.trainable_params,
        total_params=formula.total_params,
        memory=formula.memory_at(b, s),
        layers=formula.layers_at(b, s),
        environment={**environment("cpu"), EVALUATED_KEY: formula.how},
    )


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def load_formulas(out_dir: str | Path) -> list[Formula]:
    """The formulas a compare wrote into ``out_dir`` (none for a sweep that profiled everything)."""
    folder = Path(out_dir) / FORMULAS_DIR
    if not folder.is_dir():
        return []
    return [_read_formula(p) for p in sorted(folder.glob("*.json"))]


def _read_formula(path: Path) -> Formula:
    """One saved formula, read strictly; MemprofError naming the file when it is not one."""
    try:
        return Formula.from_dict(parse_json(path.read_bytes()))
    except (BadJSON, MemprofError, KeyError, TypeError, ValueError, OSError) as exc:
        raise MemprofError(
            f"cannot read the formula {str(path)!r} ({one_line(exc)}); delete it and run compare again"
        ) from None
