"""``memprof fit``: the largest batch size (or sequence length) per method that fits a GPU budget,
found with a handful of fake-engine profiles of the steady-state step.

NOTE [ What fit counts ]
A size fits when ``required <= budget``, where, per rank::

    step     = parameters + gradients + optimizer state      (sharded: ``memprof.fit.sharding``;
             + DDP's gradient buckets                         with ``none`` on more than one rank)
             + activations + temporaries                     (at the step's peak)
    required = ceil(step * (1 + fragmentation)) + context

``step`` is the peak of a steady-state step (NOTE [ First and steady steps ]: AdamW's state
resident throughout) measured by the fake engine for the target's kernels, split at that peak as
``Memory`` splits it. The optimizer state is AdamW's ``exp_avg`` and ``exp_avg_sq`` in the
parameters' dtype: under ``bf16``/``fp16`` the step is pure low precision and has no fp32 master
copy, so none is counted; under ``mixed-bf16``/``mixed-fp16`` the parameters are fp32 and are
themselves the master weights (autocast casts per operator; those casts are temporaries).
``context`` (default ``CONTEXT_ALLOWANCE``) is what the process holds outside PyTorch's tensors:
the CUDA context, the kernels of torch's CUDA libraries, cuBLAS/cuDNN workspaces.
``fragmentation`` (default ``FRAGMENTATION``) is the share of the step's bytes the caching
allocator reserves beyond what tensors use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from memprof.engines import ModelCache, run
from memprof.engines.config import DTYPES, ProfileConfig
from memprof.engines.formula_cache import FormulaCache
from memprof.errors import MemprofError, one_line
from memprof.fit import CONTEXT_ALLOWANCE, FRAGMENTATION, sharding
from memprof.fit.bisection import search
from memprof.results.configuration import default
from memprof.results.result import Result
from memprof.sweep.grid import parse_methods
from memprof.units import format_bytes

#: Largest batch size searched (the fake engine builds the token batch on this machine).
MAX_BATCH = 1 << 16


@dataclass
class FitConfig:
    """What ``fit`` searches; validated on construction. ``seq_len`` fixed: the batch size is
    searched; ``batch_size`` fixed (the global batch, split over ``world_size`` ranks): the sequence
    length is searched. Neither: ``seq_len`` is a profile's default."""

    backbone: str
    methods: list[str]
    budget: int
    seq_len: int | None = None
    batch_size: int | None = None
    # what a profile also takes: memprof.results.configuration's defaults
    dtype: str = default("dtype")
    attn: str = default("attn")
    task: str | None = default("task")
    #: how each profiled step computes its loss (``memprof.models.losses``): ``full`` or ``chunked``
    loss: str = default("loss")
    world_size: int = 1
    shard: str = "none"
    context: int = CONTEXT_ALLOWANCE
    fragmentation: float = FRAGMENTATION

    def __post_init__(self) -> None:
        # registered, each once (an alias with its method is one method twice)
        self.methods = parse_methods(
            self.methods if isinstance(self.methods, str) else ",".join(map(str, self.methods))
        )
        sharding.check(self.world_size, self.shard)
        if self.seq_len is not None and self.batch_size is not None:
            raise MemprofError(
                f"both --seq-len {self.seq_len} and --batch-size {self.batch_size} are fixed, so there "
                "is nothing to search; pass one of them (fit finds the largest other)"
            )
        if self.seq_len is None and self.batch_size is None:
            self.seq_len = default("seq_len")
        for name, least, example in (("budget", 1, "24GiB"), ("context", 0, "1GiB")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise MemprofError(
                    f"{name} {value!r} is not a byte count of at least {least}; pass e.g. --{name} {example}"
                )
        if isinstance(self.fragmentation, bool) or not (
            isinstance(self.fragmentation, (int, float)) and 0 <= self.fragmentation < 1
        ):
            raise MemprofError(
                f"fragmentation {self.fragmentation!r} must be a fraction from 0 up to (not including) "
                "1; pass e.g. --fragmentation 0.1 (10%)"
            )
        # the user's own values through ProfileConfig's checks (types, ranges, backbone, dtype, attn,
        # task, loss) before any arithmetic on them
        given = ProfileConfig(
            backbone=self.backbone,
            method=self.methods[0],
            seq_len=self.seq_len or 1,
            batch_size=self.batch_size or 1,
            engine="fake",
            target="cuda",
            dtype=self.dtype,
            attn=self.attn,
            task=self.task,
            step="steady",
            loss=self.loss,
        )
        if self.batch_size is not None and self.batch_size % self.world_size:
            raise MemprofError(
                f"batch size {self.batch_size} does not split over world size {self.world_size}; pass a "
                f"global --batch-size that is a multiple of {self.world_size}"
            )
        self.backbone_name, self.max_seq_len = given.backbone, given.resolved.max_seq_len

    @property
    def searched(self) -> str:
        return "batch_size" if self.batch_size is None else "seq_len"

    @property
    def cap(self) -> int:
        return MAX_BATCH if self.searched == "batch_size" else self.max_seq_len

    def profile_config(self, method: str, size: int, step: str) -> ProfileConfig:
        """The configuration one rank runs when the searched size is ``size`` (micro-batch or length)."""
        seq, micro = (
            (self.seq_len, size) if self.searched == "batch_size" else (size, self.batch_size // self.world_size)
        )
        return ProfileConfig(
            backbone=self.backbone,
            method=method,
            seq_len=seq,
            batch_size=micro,
            engine="fake",
            target="cuda",
            dtype=self.dtype,
            attn=self.attn,
            task=self.task,
            step=step,
            loss=self.loss,
        )


@dataclass
class Point:
    """One profiled size, as one rank holds it (NOTE [ What fit counts ])."""

    size: int
    result: Result
    state: sharding.PerRank
    context: int
    fragmentation: float

    @property
    def activations(self) -> int:
        return self.result.memory.activations_at_peak

    @property
    def temporaries(self) -> int:
        return self.result.memory.temporaries

    @property
    def step(self) -> int:
        return self.state.total + self.activations + self.temporaries

    @property
    def margin(self) -> int:
        return math.ceil(self.step * self.fragmentation)

    @property
    def required(self) -> int:
        return self.step + self.margin + self.context

    def breakdown(self) -> dict[str, int]:
        return {
            "parameters": self.state.parameters,
            "gradients": self.state.gradients,
            "optimizer_state": self.state.optimizer_state,
            "ddp_buckets": self.state.buckets,
            "activations": self.activations,
            "temporaries": self.temporaries,
            "step_peak": self.step,
            "fragmentation": self.margin,
            "context": self.context,
            "required": self.required,
        }


@dataclass
class Answer:
    """The largest size of one method that fits (0: not even the smallest), and the evidence."""

    method: str
    searched: str
    world_size: int
    value: int
    #: "budget" (value + 1 does not fit) or "cap" (the largest size there is fits)
    limit: str
    at: Point | None
    over: Point | None
    first_step: Point | None
    points: dict[int, Point] = field(default_factory=dict)
    #: how many of ``points`` the closed form answered (the rest were profiled)
    evaluated: int = 0

    @property
    def profiles(self) -> int:
        """Steady-step profiles the answer took (the first-step profile not counted)."""
        return len(self.points) - self.evaluated

    def to_dict(self) -> dict:
        key = "max_batch_size" if self.searched == "batch_size" else "max_seq_len"
        value = self.value * self.world_size if self.searched == "batch_size" else self.value
        out = {"method": self.method, key: value, "limit": self.limit, "profiles": self.profiles}
        out["evaluated"] = self.evaluated
        if self.searched == "batch_size":
            out["micro_batch_size"] = self.value
        out["memory"] = self.at.breakdown() if self.at is not None else None
        out["first_step_peak"] = self.first_step.step if self.first_step is not None else None
        return out


Progress = Callable[[str, int, str], None]


def fit(config: FitConfig, progress: Progress | None = None, formulas: FormulaCache | None = None) -> list[Answer]:
    """The answer for every method of ``config``; ``progress(method, size, step)`` before each profile.
    A budget that cannot even hold a method's weights is refused before anything is profiled.
    ``formulas``: search each method's closed form, cached there (NOTE [ Solving the formula ]);
    None searches with profiles only."""
    cache = ModelCache(max_models=len(config.methods))  # fake models hold no memory: each built once
    for method in config.methods:
        _check_weights(config, method, weight_bytes(config, method, cache))
    answers = []
    for method in config.methods:
        if formulas is not None:
            answers.append(solved(config, method, progress, cache, formulas))
        else:
            answers.append(fit_method(config, method, progress, cache))
    return answers


# NOTE [ Solving the formula ]
# With a formula cache, ``fit`` searches a method's closed form of the steady step (the cache's, or
# derived: one trace) instead of profiling: ``search`` asks the same question of every size, and the
# formula answers it exactly without a profile (a size outside its bounds is profiled). The answer
# is then confirmed with real profiles at the answer and one above (what the profile search ends
# with too): both must equal the formula's numbers in every byte, and the confirmed formula is
# cached. A formula that cannot be derived, or that a confirmation contradicts, leaves the method to
# the profile search (``fit_method``), with a warning that says why. The answer is the same either
# way; ``Answer.evaluated`` counts the sizes the formula answered. Without a cached formula the
# smallest probe is profiled first: where it is a batch of one and does not fit, the answer is 0 and
# no trace is paid for. With a formula, a probe outside its bounds (a causal LM's batch of one) is
# asked only if the search comes down to it, as the need grows with the size.


def solved(
    config: FitConfig,
    method: str,
    progress: Progress | None,
    cache: ModelCache,
    formulas: FormulaCache,
) -> Answer:
    """The answer from the method's confirmed closed form; the profile search's (reusing every
    profile taken) where the method has none, where not even a batch of one fits, or where a
    confirmation contradicts the formula (NOTE [ Solving the formula ])."""
    from memprof.engines.formula_cache import warn
    from memprof.engines.formula_fit import disagreement_with
    from memprof.sweep.closed_form import evaluate

    steady = config.profile_config(method, 1, "steady")
    cached = formulas.get(steady)
    points: dict[int, Point] = {}
    probes = _probes(config)
    if cached is not None:
        formula = cached
    else:
        # The smallest probe first, profiled: a batch of one that does not fit means the answer is
        # 0, which a trace would cost several profiles to find. (A sequence length below the
        # smallest probe may still fit: that search goes on with the formula.)
        smallest = probes[0]
        points[smallest] = _measure(config, method, smallest, "steady", progress, cache)
        if smallest == 1 and points[smallest].required > config.budget:
            return fit_method(config, method, progress, cache, points)
        # imported only here, outside the try (a broken install is an error, not a fit without a
        # formula): about a second of imports that a cached formula never needs
        from memprof.engines.symbolic import derive

        try:
            formula = derive(steady, profile=lambda c: run(c, cache))
        except Exception as exc:  # noqa: BLE001 - any failure to derive: the profile search, and why
            warn(f"fit {method}: no closed form ({one_line(exc)}); searching with profiles")
            return fit_method(config, method, progress, cache, points)
    evaluated: set[int] = set()

    def covered(c: ProfileConfig) -> bool:
        return formula.covers(c.batch_size, c.seq_len)

    def need(size: int) -> int:
        if size in points:  # the smallest probe, profiled before the trace
            return points[size].required
        c = config.profile_config(method, size, "steady")
        if covered(c):
            points[size] = _point(config, size, evaluate(formula, c))
            evaluated.add(size)
        else:
            points[size] = _measure(config, method, size, "steady", progress, cache)
        return points[size].required

    # a probe outside the formula's bounds costs a profile: asked only if the search comes down to it
    probes = tuple(p for p in probes if covered(config.profile_config(method, p, "steady"))) or probes
    value, limit = search(need, config.budget, probes, config.cap)
    confirmed = None  # the size whose profile agreed with the formula
    for n in (value, value + 1):
        if n not in evaluated:  # 0, past the cap, or outside the formula's bounds: already profiled
            continue
        measured = _measure(config, method, n, "steady", progress, cache)
        result = measured.result
        difference = disagreement_with(formula, result) if result.status == "ok" else result.status
        points[n] = measured
        evaluated.discard(n)
        if difference:
            if cached is not None:
                formulas.discard(steady)
            warn(f"fit {method}: the closed form disagrees with the profile at {n} ({difference}); profiling instead")
            profiled = {k: p for k, p in points.items() if k not in evaluated}  # not profiled again
            return fit_method(config, method, progress, cache, profiled)
        confirmed = confirmed or n
    if confirmed is not None:
        formulas.put(steady, formula, config.profile_config(method, confirmed, "steady"))
    first = _measure(config, method, value, "first", progress, cache) if value else None
    at, over = points.get(value), points.get(value + 1)
    return Answer(
        method, config.searched, config.world_size, value, limit, at, over, first, points, evaluated=len(evaluated)
    )


def weight_bytes(config: FitConfig, method: str, cache: ModelCache | None = None) -> int:
    """Bytes of the parameters and buffers of ``method``'s model (the fake engine's: no memory, no
    arithmetic), as ``Memory.parameters`` counts them (each storage once)."""
    from memprof.engines import fake

    built = (cache or ModelCache()).get(config.profile_config(method, 1, "steady"), fake.build)
    seen: dict[int, int] = {}
    for t in [*built.model.parameters(), *built.model.buffers()]:
        seen.setdefault(id(t), t.numel() * t.element_size())
    return sum(seen.values())


def fit_method(
    config: FitConfig,
    method: str,
    progress: Progress | None = None,
    cache: ModelCache | None = None,
    points: dict[int, Point] | None = None,
) -> Answer:
    """The answer for ``method``: the search (NOTE [ Searching ] in bisection.py), then one profile
    of the first step at the size found (``cache``: models already built, e.g. by ``weight_bytes``;
    ``points``: sizes already profiled, not profiled again)."""
    cache = cache if cache is not None else ModelCache()
    points = dict(points or {})

    def need(size: int) -> int:
        if size not in points:
            points[size] = _measure(config, method, size, "steady", progress, cache)
        return points[size].required

    value, limit = search(need, config.budget, _probes(config), config.cap)
    at = points.get(value)
    first = _measure(config, method, value, "first", progress, cache) if value else None
    return Answer(method, config.searched, config.world_size, value, limit, at, points.get(value + 1), first, points)


def _measure(
    config: FitConfig, method: str, size: int, step: str, progress: Progress | None, cache: ModelCache
) -> Point:
    """One fake-engine profile of ``method`` at ``size`` (``progress`` told first), as a Point."""
    if progress:
        progress(method, size, step)
    return _point(config, size, run(config.profile_config(method, size, step), cache))


def _point(config: FitConfig, size: int, result: Result) -> Point:
    m = result.memory
    buckets = result.trainable_params * DTYPES[config.dtype][0].itemsize  # DDP's buckets: one set of gradients
    state = sharding.per_rank(
        m.parameters, m.gradients, m.optimizer_state, config.world_size, config.shard, ddp_buckets=buckets
    )
    return Point(size, result, state, config.context, config.fragmentation)


def _check_weights(config: FitConfig, method: str, nbytes: int) -> None:
    weights = sharding.per_rank(nbytes, 0, 0, config.world_size, config.shard).parameters
    if weights + config.context > config.budget:
        per = " per rank" if config.world_size > 1 else ""
        raise MemprofError(
            f"budget {format_bytes(config.budget)} is smaller than {config.backbone_name}'s weights under {method} "
            f"({format_bytes(weights)}{per}) plus the context allowance ({format_bytes(config.context)}); pass a "
            "larger --budget or --gpu, or spread the weights with --world-size N --shard zero3"
        )


def _probes(config: FitConfig) -> tuple[int, ...]:
    """The sizes profiled first: batch sizes 1 and 2; sequence lengths a quarter of the positions
    (at most 128) and twice that."""
    if config.searched == "batch_size":
        return (1, 2)
    s = max(1, min(128, config.cap // 4))
    return (s, 2 * s)


def curve_data(answers: list[Answer]) -> dict[str, list[tuple[int, int]]]:
    """What ``reporters.fit_plot.plot_fit`` draws: per method, (size, bytes required per rank) for
    every size its search profiled, ascending."""
    return {a.method: [(n, a.points[n].required) for n in sorted(a.points)] for a in answers}


def to_json(config: FitConfig, answers: list[Answer], budget_source: str) -> dict:
    """``--json``'s document: the question, what is counted, and one entry per method."""
    return {
        "backbone": config.backbone_name,
        "dtype": config.dtype,
        "attn": config.attn,
        "target": "cuda",
        "step": "steady",
        "loss": config.loss,
        "seq_len": config.seq_len,
        "batch_size": config.batch_size,
        "searched": config.searched,
        "budget": config.budget,
        "budget_source": budget_source,
        "world_size": config.world_size,
        "shard": config.shard,
        "context": config.context,
        "fragmentation": config.fragmentation,
        "counts": COUNTS,
        "methods": [a.to_dict() for a in answers],
    }


#: What ``required`` counts, in one sentence (the table's caption and the JSON's ``counts``).
COUNTS = (
    "steady-state step (AdamW state resident) per rank: parameters + gradients + optimizer state (AdamW "
    "exp_avg and exp_avg_sq in the parameters' dtype; pure bf16/fp16 has no fp32 master copy, mixed-* keeps "
    "fp32 parameters as the master weights) + activations + temporaries at the peak, x (1 + fragmentation), "
    "+ context"
)
