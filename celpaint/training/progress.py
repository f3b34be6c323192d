"""What a training run reports while it runs: ``TrainProgress`` callbacks and the records they
receive. Only rank 0 of a distributed run reports; the CLI draws them (``celpaint.cli.train``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainInfo:
    """What a run is about to do (given to ``TrainProgress.start``)."""

    out: Path
    model: str
    device: str
    world_size: int
    train_count: int
    val_count: int
    skipped: list[str]
    steps_per_epoch: int
    total_steps: int
    start_step: int
    epochs: int
    generator_parameters: int
    discriminator_parameters: int
    resumed: bool


@dataclass
class StepUpdate:
    """One finished optimizer step (given to ``TrainProgress.step``)."""

    step: int
    total_steps: int
    epoch: int
    epochs: int
    batch: int
    steps_per_epoch: int
    losses: dict[str, float]
    lr: float
    images_per_second: float
    eta_seconds: float


@dataclass
class TrainResult:
    """How a run ended.

    ``step`` counts the run's steps, ``start_step`` those done before this call (resumed
    runs); ``seconds`` and ``images_per_second`` cover this call's steps alone.
    ``finished_before``: a resumed run that had nothing left to do (and did nothing).
    """

    out: Path
    step: int
    total_steps: int
    epochs_done: int
    interrupted: bool
    seconds: float
    images_per_second: float
    metrics: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    start_step: int = 0
    finished_before: bool = False


class TrainProgress:
    """Callbacks a run reports through (only on rank 0). Override what you need."""

    def loading(self, done: int, total: int) -> None:
        """Training data being decoded."""

    def start(self, info: TrainInfo) -> None:
        """The data is read and the networks are built; training starts."""

    def step(self, update: StepUpdate) -> None:
        """An optimizer step finished."""

    def validating(self, epoch: int) -> None:
        """Validation of ``epoch`` (1-based) starts."""

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Epoch ``epoch`` (1-based) finished; ``metrics`` is empty without validation data."""

    def saved(self, step: int, reason: str) -> None:
        """A checkpoint was written (``reason``: "every", "epoch", "stop" or "end")."""

    def stopping(self) -> None:
        """An interrupt was received: the current step finishes, then everything is saved."""

    def end(self, result: TrainResult) -> None:
        """The run finished or was interrupted; everything is saved."""
