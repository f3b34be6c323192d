"""The run directory a training run writes (``TrainConfig.out``)::

    generator/         the generator in the checkpoint format (what `colorize --model` loads)
    discriminator/     the discriminator, same format
    train_state.pt     everything --resume needs: step, epoch, both networks' weights, optimizers,
                       schedulers, gradient scalers, RNG states, the resolved config. Tensors and
                       plain values only: it loads with torch.load(weights_only=True).
    losses.csv         step, epoch, every loss, the learning rate
    loss_curves.png    the losses over the steps
    samples/epoch_NNN.png  rows: input, generated, ground truth, for fixed validation frames
    metrics.json       validation PSNR, SSIM, mean CIEDE2000 and pixel accuracy per epoch

Every file is replaced atomically (written beside its target, then renamed), so a crash while
saving keeps the previous checkpoint. The weights live in ``train_state.pt`` too, so that the
state it describes is always self-consistent, whatever happened between two files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from celpaint.errors import CheckpointError, InputError
from celpaint.io.frames import atomic_path, write_json, write_text
from celpaint.ops.metrics import METRIC_NAMES
from celpaint.training.losses import LOSS_NAMES

STATE_NAME = "train_state.pt"
STATE_FORMAT = 1
# The columns of losses.csv.
LOSS_COLUMNS = ["step", "epoch", *LOSS_NAMES, "lr"]
RUN_FILES = (
    "generator",
    "discriminator",
    STATE_NAME,
    "losses.csv",
    "loss_curves.png",
    "samples",
    "metrics.json",
)


def check_output_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an output folder that holds something else, before anything is read or written."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; pass a folder for the run")
    state = out / STATE_NAME
    if resume:
        if not state.is_file():
            raise InputError(
                f"--resume: {out} holds no {STATE_NAME}, so there is no run to continue; drop "
                "--resume to start one"
            )
        return
    if not out.exists() or overwrite:
        return
    entries = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    if state.is_file():
        raise InputError(
            f"{out} holds another training run; pass --resume to continue it, --overwrite to "
            "replace it, or another --out"
        )
    if entries:
        raise InputError(
            f"{out} is not empty ({', '.join(sorted(entries)[:5])}); pass another --out, or "
            "--overwrite to write the run there (files of a previous run are replaced)"
        )


def clear_run_files(out: Path) -> None:
    """Remove a previous run's files from ``out`` (other files are left alone)."""
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


class RunWriter:
    """Writes the run directory's logs (rank 0 only)."""

    def __init__(self, out: Path, resume_step: int | None):
        self.out = out
        self.rows: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        out.mkdir(parents=True, exist_ok=True)
        (out / "samples").mkdir(exist_ok=True)
        if resume_step is not None:
            self._load_previous(resume_step)

    @property
    def losses_path(self) -> Path:
        return self.out / "losses.csv"

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.json"

    def _load_previous(self, step: int) -> None:
        # Rows or metrics written after the saved state (a crash between files) are dropped,
        # so the logs describe exactly the steps the resumed run continues from.
        if self.losses_path.is_file():
            with self.losses_path.open(newline="") as handle:
                for row in csv.DictReader(handle):
                    try:
                        parsed = {k: float(v) for k, v in row.items()}
                    except (TypeError, ValueError):
                        continue
                    if parsed["step"] <= step:
                        parsed["step"], parsed["epoch"] = int(parsed["step"]), int(parsed["epoch"])
                        self.rows.append(parsed)
        self._write_losses(self.rows)
        if self.metrics_path.is_file():
            try:
                data = json.loads(self.metrics_path.read_text())
                self.metrics = [e for e in data.get("epochs", []) if e.get("step", 0) <= step]
            except (json.JSONDecodeError, AttributeError):
                self.metrics = []

    def _write_losses(self, rows: Iterable[dict[str, Any]]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=LOSS_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
        write_text(self.losses_path, buffer.getvalue())

    def log(self, step: int, epoch: int, losses: dict[str, float], lr: float) -> None:
        row = {"step": step, "epoch": epoch, **{k: losses[k] for k in LOSS_NAMES}, "lr": lr}
        self.rows.append(row)
        self.pending.append(row)

    def flush(self) -> None:
        """Append the rows logged since the last flush (at each checkpoint)."""
        if not self.pending:
            return
        if not self.losses_path.is_file():
            self._write_losses(self.rows)
        else:
            with self.losses_path.open("a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=LOSS_COLUMNS)
                for row in self.pending:
                    writer.writerow(row)
        self.pending.clear()

    def add_metrics(self, entry: dict[str, Any], model: str) -> None:
        """Record one epoch's validation scores (replacing an earlier entry of that epoch) and
        rewrite metrics.json."""
        self.metrics = [e for e in self.metrics if e["epoch"] != entry["epoch"]] + [entry]
        data = {"model": model, "metrics": list(METRIC_NAMES), "epochs": self.metrics}
        write_json(self.metrics_path, data)

    def plot(self) -> None:
        """Draw ``loss_curves.png`` (matplotlib's Agg canvas; pyplot's global state untouched)."""
        if not self.rows:
            return
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        steps = np.array([row["step"] for row in self.rows])
        figure = Figure(figsize=(10, 4), dpi=100)
        FigureCanvasAgg(figure)
        panels = (
            ("generator", ("g_total", "g_adv", "g_pixel")),
            ("discriminator", ("d_total", "d_real", "d_fake")),
        )
        for index, (title, names) in enumerate(panels):
            axes = figure.add_subplot(1, 2, index + 1)
            positive = True
            for name in names:
                values = np.array([row[name] for row in self.rows], dtype=float)
                positive = positive and values.min() > 0
                axes.plot(steps, values, alpha=0.25, linewidth=0.8)
                axes.plot(steps, _smooth(values), label=name, color=axes.lines[-1].get_color())
            axes.set_title(title)
            axes.set_xlabel("step")
            # A log scale only where every series drawn on it is positive.
            axes.set_yscale("log" if title == "generator" and positive else "linear")
            axes.legend(loc="upper right", fontsize="small")
            axes.grid(alpha=0.3)
        figure.tight_layout()
        with atomic_path(self.out / "loss_curves.png") as temp:
            figure.savefig(temp, format="png")


def _smooth(values: np.ndarray, window: int = 0) -> np.ndarray:
    window = window or max(1, len(values) // 50)
    if window <= 1:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def _tile(image: np.ndarray, size: int) -> np.ndarray:
    """The centred ``size x size`` window of ``image`` (mirror-padded when smaller)."""
    height, width = image.shape[:2]
    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if pad_h or pad_w:
        padding = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
        image = np.pad(image, padding, mode="symmetric")
        height, width = image.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return image[top : top + size, left : left + size]


def sample_grid(columns: list[tuple[np.ndarray, np.ndarray, np.ndarray]], size: int) -> np.ndarray:
    """A uint8 RGB grid: one column per frame; rows input, generated, ground truth."""
    gap = 4
    rows, count = 3, len(columns)
    grid = np.full((rows * size + (rows - 1) * gap, count * size + (count - 1) * gap, 3), 255,
                   np.uint8)  # fmt: skip
    for column, images in enumerate(columns):
        for row, image in enumerate(images):
            if image.ndim == 2:
                image = np.repeat(image[:, :, None], 3, axis=2)
            top, left = row * (size + gap), column * (size + gap)
            grid[top : top + size, left : left + size] = _tile(image, size)
    return grid


def save_train_state(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` atomically (temp file beside it, then a rename)."""
    path = Path(path)
    with atomic_path(path) as temp:
        torch.save(state, temp)
    return path


def load_train_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``train_state.pt`` without executing pickled code (``weights_only=True``).

    Raises:
        CheckpointError: missing, corrupt, or of another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path.parent} holds no {STATE_NAME}: there is no run to resume there"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(
            f"{path} is corrupt or not a celpaint training state ({type(error).__name__}); "
            "start over with --overwrite"
        ) from None
    if not isinstance(state, dict) or state.get("format_version") != STATE_FORMAT:
        version = state.get("format_version") if isinstance(state, dict) else None
        raise CheckpointError(
            f"{path} has training-state format {version!r}; this celpaint resumes format "
            f"{STATE_FORMAT}. Start a new run with --init {path.parent} instead"
        )
    return state
