"""The reproduction's state: its flags, schedule, calibration and plan (all
saved in plan.json, whose JSON form `to_json` / `from_json` keep), and the
context one invocation works in (not saved)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from psgan_fast.reproduce.common import BATCH_SIZE, DEFAULT_EVAL_SAMPLES, JOBS_EFFICIENCY, ReproError


def _known(cls, doc: Mapping) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in doc.items() if k in names}


@dataclass
class Flags:
    """The settings a reproduction was planned with (plan.json "flags");
    a later invocation may repeat them, not change them."""

    budget_minutes: float
    seeds: int = 1
    seed_rows: Optional[list[str]] = None  # rows that train every seed (None: all)
    jobs: int = 1
    feature_extractor: Optional[str] = None  # None until planned: the default extractor
    device: str = "auto"
    smoke: bool = False
    threads: Optional[int] = None  # None until planned: chosen by a timing
    eval_samples: int = DEFAULT_EVAL_SAMPLES
    final_samples: int = 5000

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping) -> "Flags":
        return cls(**_known(cls, doc))


@dataclass
class Schedule:
    """Identical for every run: epochs, their stage split, batches per epoch
    and the evaluation sample counts."""

    epochs: int
    stage_epochs: list[int]
    limit_batches: int
    full_epoch: bool
    target_seconds: Optional[float] = None  # calibrated plans only: the predicted work's target
    checkpoint_steps: Optional[int] = None  # calibrated plans only: checkpoint inside long epochs
    batch_size: int = BATCH_SIZE
    eval_every: int = 1
    eval_samples: int = DEFAULT_EVAL_SAMPLES
    final_samples: int = 5000
    full_epoch_batches: int = 0

    def to_json(self) -> dict:
        doc = dataclasses.asdict(self)
        for k in ("target_seconds", "checkpoint_steps"):  # absent from a smoke plan
            if doc[k] is None:
                del doc[k]
        return doc

    @classmethod
    def from_json(cls, doc: Mapping) -> "Schedule":
        return cls(**_known(cls, doc))


@dataclass
class Calibration:
    """Measured on this machine when planning: seconds per training step at
    each of the three stages (row -> [7 px, 14 px, 28 px]), the evaluation
    cost per generated image and the per-epoch plots' cost."""

    step_seconds: dict[str, list[float]]
    eval_seconds_per_image: float
    epoch_overhead_seconds: float
    steps_per_stage: Optional[int] = None
    seconds: float = 0.0  # the calibration's own duration
    loadavg: Optional[list[float]] = None

    def to_json(self) -> dict:
        return {"steps_per_stage": self.steps_per_stage, "step_seconds": self.step_seconds,
                "eval_seconds_per_image": self.eval_seconds_per_image,
                "epoch_overhead_seconds": self.epoch_overhead_seconds, "seconds": self.seconds,
                "loadavg": self.loadavg}

    @classmethod
    def from_json(cls, doc: Mapping) -> "Calibration":
        return cls(**_known(cls, doc))


@dataclass
class Plan:
    """A reproduction's plan (plan.json): written once, before any training,
    and reused by every later invocation."""

    version: int
    created: str
    command: str
    flags: Flags
    budget_minutes: float
    smoke: bool
    seeds: list[int]
    seed_rows: Optional[list[str]]
    rows: list[str]
    device: str  # "cpu" or "cuda"
    device_name: str
    cpu_count: Optional[int]
    torch_threads: int
    data_dir: Optional[str]
    feature_extractor: str
    extractor_at_plan: Optional[dict]
    schedule: Schedule
    calibration: Optional[Calibration]  # None for a smoke plan
    prediction: Optional[dict]  # plan.predict()'s seconds per run; None for a smoke plan
    real_reference_seconds: Optional[float] = None
    versions: dict = field(default_factory=dict)
    loadavg_at_plan: Optional[list[float]] = None
    # Later invocations with --extend: {"at", "command", "seeds", "seed_rows"}
    # each, the seeds and seed rows the plan had before it (extend_plan).
    extensions: list = field(default_factory=list)

    @property
    def jobs(self) -> int:
        return int(self.flags.jobs or 1)

    def wall_minutes(self) -> float:
        """The predicted wall clock: the runs' serial total, shared by
        --jobs processes at JOBS_EFFICIENCY."""
        serial = self.prediction["total_seconds"] / 60
        return serial if self.jobs <= 1 else serial / (self.jobs * JOBS_EFFICIENCY)

    def to_json(self) -> dict:
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        doc.update(flags=self.flags.to_json(), schedule=self.schedule.to_json(),
                   calibration=None if self.calibration is None else self.calibration.to_json())
        return doc

    @classmethod
    def from_json(cls, doc: Mapping) -> "Plan":
        try:
            cal = doc.get("calibration")
            return cls(**dict(_known(cls, doc), flags=Flags.from_json(doc["flags"]),
                              schedule=Schedule.from_json(doc["schedule"]),
                              calibration=None if cal is None else Calibration.from_json(cal),
                              extractor_at_plan=doc.get("extractor_at_plan"), prediction=doc.get("prediction")))
        except (KeyError, TypeError) as e:
            raise ReproError(f"plan.json is incomplete ({type(e).__name__}: {e}); use a new --out") from None


@dataclass
class Context:
    """What one invocation works with (not saved): the device, MNIST's files,
    the feature extractor and the real-data reference."""

    device: Any  # torch.device
    images: Path
    labels: Path
    extractor: dict  # the extractor's identity: name, weights, weights_sha256
    extractor_name: str
    real_ref: Any  # the real images' features (psgan_fast.metrics.evaluation.real_reference)
    inception_weights: Optional[str]
    reference_seconds: float
    command: str = ""  # this invocation's command line
    reference: Optional[dict] = None  # real held-out images' FID / IS (run.reference_eval)


def _get(plan: Union[Plan, Mapping], name: str) -> Any:
    return getattr(plan, name) if isinstance(plan, Plan) else plan.get(name)


def seeds_of(plan: Union[Plan, Mapping], row: str) -> list[int]:
    """The seeds a row trains: every planned seed, or only the first for a
    row outside --seed-rows. `plan`: a Plan, or its JSON form (only "seeds"
    and "seed_rows" are read)."""
    seeds, rows = _get(plan, "seeds"), _get(plan, "seed_rows")
    return list(seeds) if rows is None or row in rows else list(seeds[:1])


def extend_plan(plan: Plan, seeds: Optional[int], seed_rows: Optional[list[str]], *, command: str, at: str,
                all_rows: Sequence[str]) -> Plan:
    """The plan with more seeds, or more rows that train every seed (--extend).

    The schedule stays as planned, so the new runs are comparable with the
    old ones; nothing planned is dropped: `seeds` (a count) may not shrink and
    `seed_rows` must keep every row that already trains more than one seed
    (None: all of `all_rows`). Raises ReproError otherwise, or when nothing changes.
    The plan's seeds and seed rows before the change go to `extensions`.
    """
    old_rows = list(all_rows) if plan.seed_rows is None else list(plan.seed_rows)
    new_rows = old_rows if seed_rows is None else list(seed_rows)
    n = len(plan.seeds) if seeds is None else int(seeds)
    if n < len(plan.seeds):
        raise ReproError(f"--extend cannot drop seeds: --seeds {n} is fewer than the {len(plan.seeds)} planned")
    # With one planned seed every row trains just that one, whatever seed_rows says.
    dropped = [r for r in old_rows if r not in new_rows] if len(plan.seeds) > 1 else []
    if dropped:
        raise ReproError(f"--extend cannot drop seeds: --seed-rows leaves out {', '.join(dropped)}, which "
                         f"already train{'s' if len(dropped) == 1 else ''} every seed; list "
                         f"{'it' if len(dropped) == 1 else 'them'} too")
    ordered = [r for r in all_rows if r in new_rows]
    new_seed_rows = None if len(ordered) == len(all_rows) else ordered
    if n == len(plan.seeds) and new_seed_rows == plan.seed_rows:
        raise ReproError("--extend: give more --seeds or more --seed-rows than the plan has "
                         f"({len(plan.seeds)} seed(s), seed rows: {', '.join(old_rows)})")
    record = {"at": at, "command": command, "seeds": list(plan.seeds), "seed_rows": plan.seed_rows}
    flags = dataclasses.replace(plan.flags, seeds=n, seed_rows=new_seed_rows)
    return dataclasses.replace(plan, flags=flags, seeds=list(range(n)), seed_rows=new_seed_rows,
                               extensions=list(plan.extensions) + [record])


def plan_runs(plan: Union[Plan, Mapping]) -> list[tuple[str, int]]:
    """(row, seed) of every run, seed by seed."""
    return [(row, seed) for seed in _get(plan, "seeds") for row in _get(plan, "rows") if seed in seeds_of(plan, row)]
