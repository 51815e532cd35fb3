"""``memprof compare --fast``: a sweep's results from each method's closed form (``Formula``)
instead of one profile per configuration, with one real profile per method to check it.

NOTE [ A checked closed form ]
Per method, the formula is derived once (``engines.symbolic.derive``: one symbolic trace, or a
fit) and written to ``<out>/formulas/<method>.json``; every configuration of the grid is then the
formula evaluated at its batch size and sequence length (``environment["closed_form"]`` says
"symbolic" or "fitted"). One configuration per method -- the grid's largest, where a wrong term
shows most -- is also profiled for real with the fake engine, and that profile is its result; so
is any configuration outside the sizes where the formula holds (``Formula.bounds``: a batch of one
can take other branches than the trace, e.g. a view instead of a copy). If
the two differ in any byte (the Memory fields, the per-module table), the formula is not trusted:
every configuration of the method fails with the difference named (``ClosedFormMismatch``), and
``compare`` exits 1. The runner is a plain picklable object, so parallel sweeps use it as they use
``engines.run``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memprof.engines.config import ProfileConfig
from memprof.engines.registry import traceable
from memprof.errors import MemprofError, one_line
from memprof.results.files import BadJSON, parse_json, write_atomically
from memprof.results.formula import Formula
from memprof.results.result import Result, environment

FORMULAS_DIR = "formulas"


class ClosedFormMismatch(MemprofError):
    """A method's formula disagrees with its check profile."""


class ClosedFormRunner:
    """``run(config, cache) -> Result`` for ``run_sweep``, evaluating each method's formula."""

    def __init__(self, configs: list[ProfileConfig], out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        #: method -> the configuration profiled for real (the largest b·s, then s)
        self.check = {}
        for c in configs:
            best = self.check.get(c.method)
            if best is None or (c.batch_size * c.seq_len, c.seq_len) > (best.batch_size * best.seq_len, best.seq_len):
                self.check[c.method] = c
        self._formulas: dict[str, Formula] = {}
        self._checked: dict[str, Result] = {}
        self._failures: dict[str, str] = {}

    def __call__(self, config: ProfileConfig, cache: Any = None) -> Result:
        if not traceable(config.engine):
            raise MemprofError(
                f"--fast evaluates the fake engine's closed form; engine {config.engine!r} profiles "
                "every configuration: drop --fast, or use --engine fake"
            )
        if config.method not in self._formulas and config.method not in self._failures:
            self._derive_and_check(config, cache)
        if config.method in self._failures:
            raise ClosedFormMismatch(self._failures[config.method])
        checked = self._checked.get(config.method)
        if checked is not None and (checked.batch_size, checked.seq_len) == (config.batch_size, config.seq_len):
            return checked
        formula = self._formulas[config.method]
        if not formula.covers(config.batch_size, config.seq_len):  # where the trace's branches differ
            from memprof.engines import run

            return run(config, cache)
        return evaluate(formula, config)

    def _derive_and_check(self, config: ProfileConfig, cache: Any) -> None:
        """The method's formula, written out, and its check profile, before any result is given."""
        from memprof.engines import run
        from memprof.engines.symbolic import derive, disagreement_with

        formula = self._formulas[config.method] = derive(config, profile=lambda c: run(c, cache))
        folder = self.out_dir / FORMULAS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(folder / f"{_safe(config.method)}.json", json.dumps(formula.to_dict(), ensure_ascii=False))
        measured = self._checked[config.method] = run(self.check.get(config.method, config), cache)
        difference = disagreement_with(formula, measured) if measured.status == "ok" else ""
        if difference:
            self._failures[config.method] = (
                f"the closed form of {config.method} disagrees with its check profile: {difference}; profile without "
                "--fast"
            )


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
        environment={**environment("cpu"), "closed_form": formula.how},
    )


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def load_formulas(out_dir: str | Path) -> list[Formula]:
    """The formulas a ``--fast`` sweep wrote into ``out_dir`` (none for a profiled sweep)."""
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
            f"cannot read the formula {str(path)!r} ({one_line(exc)}); delete it and run compare --fast again"
        ) from None
