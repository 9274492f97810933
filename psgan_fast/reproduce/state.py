"""The reproduction's state: its flags, schedule, calibration and plan (all
saved in plan.json, whose JSON form `to_json` / `from_json` keep), and the
context one invocation works in (not saved)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

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


def plan_runs(plan: Union[Plan, Mapping]) -> list[tuple[str, int]]:
    """(row, seed) of every run, seed by seed."""
    return [(row, seed) for seed in _get(plan, "seeds") for row in _get(plan, "rows") if seed in seeds_of(plan, row)]
