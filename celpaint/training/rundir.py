"""The run directory a training run writes (``TrainConfig.out``)::

    generator/         the generator in the checkpoint format (what `colorize --model` loads)
    discriminator/     the discriminator, same format
    config.json        the run's options (``config.run_options``), readable; ``celpaint train
                       --config`` starts a run from it
    train_state.pt     everything --resume needs: step, epoch, both networks' weights, optimizers,
                       schedulers, gradient scalers, RNG states, the resolved config. Tensors and
                       plain values only: it loads with torch.load(weights_only=True).
    losses.csv         step, epoch, every loss, the learning rate
    loss_curves.png    the losses over the steps
    samples/epoch_NNN.png  rows: input, generated, ground truth, for fixed validation frames
    metrics.json       validation PSNR, SSIM, mean CIEDE2000 and pixel accuracy per epoch

Every file is replaced atomically (written beside its target, then renamed), so a crash while
saving keeps the previous checkpoint; a checkpoint folder moves aside as ``.NAME.previous``
for the instant between two renames, and loading falls back to it. The weights live in
``train_state.pt`` too, so that the state it describes is always self-consistent, whatever
happened between two files; ``losses.csv`` is written before it, and ``--resume`` drops the
rows after its step, so the two always agree.

While a run writes, it holds a lock on ``.celpaint-train.lock`` (``RunLock``); the next run of
the folder removes what a killed one left half written (``clean_run_folder``).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from celpaint.errors import CheckpointError, InputError, ProcessingError
from celpaint.io.frames import atomic_path, remove_stale_temporaries, write_json, write_text
from celpaint.models.checkpoint import (
    CONFIG_NAME,
    checkpoint_directory,
    previous_directory,
    recover_directory,
)
from celpaint.ops.metrics import METRIC_NAMES
from celpaint.training.config import RUN_FIELDS, TrainConfig, run_options
from celpaint.training.losses import LOSS_NAMES

try:
    import fcntl
except ImportError:  # Windows: runs are not locked there
    fcntl = None

log = logging.getLogger("celpaint")

STATE_NAME = "train_state.pt"
STATE_FORMAT = 1
# The columns of losses.csv.
LOSS_COLUMNS = ["step", "epoch", *LOSS_NAMES, "lr"]
RUN_CONFIG_NAME = "config.json"
RUN_FILES = (
    RUN_CONFIG_NAME,
    "generator",
    "discriminator",
    STATE_NAME,
    "losses.csv",
    "loss_curves.png",
    "samples",
    "metrics.json",
)


# Where a run keeps its samples, and the names the run gives them.
SAMPLES_DIR = "samples"
_SAMPLE_NAME = re.compile(r"epoch_\d+\.png")
# The file that ``RunLock`` locks; its presence also marks the folder as a run's.
LOCK_NAME = ".celpaint-train.lock"
# A temporary file of a killed run of celpaint 0.1 (``.NAME.partial.EXT``, no PID).
_LEGACY_TEMP = re.compile(r"\.(train_state\.pt|losses\.csv|loss_curves\.png|metrics\.json"
                          r"|epoch_\d+\.png)\.partial(\.\w+)?")  # fmt: skip
# The options that name training data: the run must not write into any of them.
DATA_OPTIONS = ("sketch", "color", "aligned", "val", "val_sketch")


def is_run_folder(out: Path) -> bool:
    """Whether ``out`` holds (the beginning of) a celpaint training run."""
    return _has_checkpoint(out) or (out / LOCK_NAME).is_file()


def _has_checkpoint(out: Path) -> bool:
    return (out / STATE_NAME).is_file() or (
        checkpoint_directory(out / "generator") / CONFIG_NAME
    ).is_file()


def check_output_folder(
    out: Path,
    resume: bool,
    overwrite: bool,
    inputs: dict[str, str | None] | None = None,
    lock: RunLock | None = None,
) -> None:
    """Refuse an output folder that holds something else, that cannot be written, that is,
    holds or lies inside training data, or that another process trains in, before anything is
    read or written.

    Args:
        out: ``--out``.
        resume, overwrite: ``--resume`` and ``--overwrite``.
        inputs: the data options (``DATA_OPTIONS``) by name, None where not given.
        lock: taken here if ``out`` has a lock file already (a fresh folder is locked when
            it is created).
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; pass a folder for the run")
    check_not_an_input(out, inputs or {})
    check_writable(out)
    if lock is not None:
        lock.acquire(create=False)
    state = out / STATE_NAME
    if resume:
        if not state.is_file():
            raise InputError(
                f"--resume: {out} holds no {STATE_NAME}, so there is no run to continue; drop "
                "--resume to start one"
            )
        return
    entries = _visible_entries(out)
    if not entries:
        return
    if is_run_folder(out):
        if overwrite:
            return
        if state.is_file():
            raise InputError(
                f"{out} holds another training run; pass --resume to continue it, --overwrite "
                "to replace it, or another --out"
            )
        raise InputError(
            f"{out} holds a training run that stopped before its first checkpoint; pass "
            "--overwrite to start it over, or another --out"
        )
    listed = ", ".join(sorted(entries)[:5])
    if overwrite:
        raise InputError(
            f"{out} is not empty ({listed}) and holds no celpaint run (no {STATE_NAME} or "
            "generator/config.json); --overwrite replaces only a previous run's files, so "
            "pass an empty or new --out"
        )
    raise InputError(f"{out} is not empty ({listed}); pass an empty or new --out")


def _visible_entries(out: Path) -> list[str]:
    if not out.is_dir():
        return []
    return [p.name for p in out.iterdir() if not p.name.startswith(".")]


def check_not_an_input(out: Path, inputs: dict[str, str | None]) -> None:
    """Raise ``InputError`` if ``out`` is, contains or lies inside one of ``inputs`` (by
    resolved path, so links and ``..`` count)."""
    target = out.expanduser().resolve()
    for name, value in inputs.items():
        if not value:
            continue
        data = Path(value).expanduser().resolve()
        if target == data or data in target.parents or target in data.parents:
            relation = (
                "is" if target == data else "lies inside" if data in target.parents else "holds"
            )
            raise InputError(
                f"--out {out} {relation} the training data --{name.replace('_', '-')} {value}; "
                "a run must not write into its data, so pass an --out outside it"
            )


def check_writable(out: Path) -> None:
    """Raise ``InputError`` unless ``out`` (or the nearest folder above it that exists, where
    it will be created) can be written."""
    ancestor = out
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"cannot write the run to {out}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(
            f"cannot write the run to {out}: the folder {ancestor} is not writable (read-only "
            "or not yours); pass another --out"
        )


class RunLock:
    """An exclusive lock on a run folder (``flock`` on ``OUT/.celpaint-train.lock``), so that
    two ``celpaint train`` processes never write one run.

    The lock ends with the process that holds it, however it ends. A run that ends normally
    removes the file; one that was killed leaves it, which marks the folder as a run's even
    before its first checkpoint (``is_run_folder``).
    """

    def __init__(self, out: Path):
        self.out = out
        self._handle: Any = None

    @property
    def path(self) -> Path:
        return self.out / LOCK_NAME

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self, create: bool) -> bool:
        """Lock the run folder, creating the folder and the lock file when ``create``.

        Returns:
            Whether the lock is held now (False: no lock file and ``create`` not given).

        Raises:
            InputError: another process holds the lock.
        """
        while not self.held:
            if not create and not self.path.is_file():
                return False
            if create:
                self.out.mkdir(parents=True, exist_ok=True)
            handle = self.path.open("a+")
            try:
                self._lock(handle)
                # The holder before us removes the file as it lets go: a lock on the file we
                # opened counts only if that file is still the one at the path.
                if os.fstat(handle.fileno()).st_ino != os.stat(self.path).st_ino:
                    handle.close()
                    continue
            except FileNotFoundError:
                handle.close()
                continue
            except BaseException:
                handle.close()
                raise
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            self._handle = handle
        return True

    def _lock(self, handle: Any) -> None:
        if fcntl is None:
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "unknown"
            raise InputError(
                f"another celpaint train is writing {self.out} (pid {pid}); wait for it or "
                "choose another --out"
            ) from None

    def release(self) -> None:
        """Let go of the lock. The file goes too (first, see ``acquire``), unless it is all
        that marks the folder as a run's: a run that stopped before its first checkpoint."""
        if self._handle is None:
            return
        if _has_checkpoint(self.out) or not _visible_entries(self.out):
            self.path.unlink(missing_ok=True)
        self._handle.close()
        self._handle = None


def clean_run_folder(out: Path) -> None:
    """Remove what killed runs of ``out`` left half written, and restore a checkpoint whose
    replacement was interrupted (``checkpoint.recover_directory``). Call it holding the
    ``RunLock``, so that no live process of this run is writing them."""
    for name in ("generator", "discriminator"):
        recover_directory(out / name)
    for folder in (out, out / SAMPLES_DIR):
        remove_stale_temporaries(folder)
        if folder.is_dir():
            # Named as celpaint 0.1 named them: ``.NAME.partial.EXT``, without a PID.
            for path in folder.iterdir():
                if _LEGACY_TEMP.fullmatch(path.name) and path.is_file():
                    path.unlink(missing_ok=True)


def clear_run_files(out: Path) -> None:
    """Remove a previous run's files from ``out``; other files (in ``samples/`` too) are left
    alone."""
    for name in RUN_FILES:
        path = out / name
        if name == SAMPLES_DIR:
            _clear_samples(path)
        elif name in ("generator", "discriminator"):
            shutil.rmtree(path, ignore_errors=True)
            shutil.rmtree(previous_directory(path), ignore_errors=True)
        elif path.is_dir():
            # Not something a run writes as a folder: the user's.
            continue
        elif path.exists():
            path.unlink()


def _clear_samples(samples: Path) -> None:
    if not samples.is_dir():
        return
    for path in samples.iterdir():
        if _SAMPLE_NAME.fullmatch(path.name) and path.is_file():
            path.unlink()
    if not any(samples.iterdir()):
        samples.rmdir()


def _os_error(error: BaseException) -> OSError | None:
    """The OSError behind ``error``: itself, or one it was raised from or while handling."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@contextlib.contextmanager
def disk_errors(out: Path) -> Iterator[None]:
    """Turn a full disk while writing the run into one ``ProcessingError`` that says what to
    do (torch reports one as "enforce fail", safetensors and celpaint's writers as others)."""
    try:
        yield
    except Exception as error:
        cause = _os_error(error)
        if cause is None or cause.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        then = (
            "resume with --resume"
            if (out / STATE_NAME).is_file()
            else "start again with --overwrite"
        )
        raise ProcessingError(
            f"no space left on the device holding {out}; free space and {then}"
        ) from None


def write_run_config(out: Path, config: TrainConfig) -> Path:
    """Write ``OUT/config.json``: the options ``config`` runs with (atomically)."""
    return write_json(out / RUN_CONFIG_NAME, run_options(config))


def edited_run_options(out: Path, saved: dict[str, Any]) -> list[str]:
    """The options (but those of one invocation, ``RUN_FIELDS``) in which ``OUT/config.json``
    differs from the saved run's ``saved`` config: what someone changed in the file by hand,
    or a session that stopped before its first checkpoint changed. Empty without the file."""
    path = out / RUN_CONFIG_NAME
    try:
        written = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(written, dict):
        return []
    options = run_options(TrainConfig.from_dict(saved))
    return sorted(
        name
        for name, value in options.items()
        if name not in RUN_FIELDS and name in written and written[name] != value
    )


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
        # so the logs describe exactly the steps the resumed run continues from. The logs are
        # flushed before the state is saved, so no step up to the state's is missing.
        by_step: dict[int, dict[str, Any]] = {}
        if self.losses_path.is_file():
            with self.losses_path.open(newline="") as handle:
                for row in csv.DictReader(handle):
                    try:
                        parsed = {k: float(row[k]) for k in LOSS_COLUMNS}
                    except (KeyError, TypeError, ValueError):
                        continue  # a line cut short by a crash
                    parsed["step"], parsed["epoch"] = int(parsed["step"]), int(parsed["epoch"])
                    if 0 < parsed["step"] <= step:
                        by_step[parsed["step"]] = parsed
        self.rows = [by_step[k] for k in sorted(by_step)]
        if len(self.rows) != step:
            log.warning(
                "%s lacks %d of the %d steps before the resumed one; their losses are lost",
                self.losses_path, step - len(self.rows), step,
            )  # fmt: skip
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
    """Write ``state`` with ``torch.save`` atomically (temp file beside it, then a rename).

    Raises:
        OSError: the file could not be written (``errno.ENOSPC`` on a full disk).
    """
    path = Path(path)
    with atomic_path(path) as temp, temp.open("wb") as handle:
        try:
            torch.save(state, handle)
        except RuntimeError as error:
            # torch reports a failed write as "enforce fail at inline_container.cc"; the
            # OSError that says why is the exception it was handling, or, where torch keeps
            # none, the room left on the device.
            cause = _os_error(error)
            if cause is not None:
                raise cause from None
            if shutil.disk_usage(temp.parent).free < _tensor_bytes(state):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(temp)) from None
            raise
    return path


def _tensor_bytes(value: Any) -> int:
    """The bytes of the tensors in ``value`` (nested dicts, lists and tuples)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_tensor_bytes(v) for v in value)
    return 0


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
