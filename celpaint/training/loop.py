"""``train()``: a whole training run, from options to the run directory (``rundir``).

Every process of a run (one, or several under ``torchrun``: ``distributed``) resolves the
options, reads the data and builds the networks (``_prepare``); then ``_Run.fit`` runs the
``Trainer``'s steps (``gan``), validates each epoch through the pipeline's ``Colorizer``
(``validation``), saves checkpoints, and reports through ``TrainProgress`` (``progress``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from celpaint.errors import CelpaintError, CheckpointError, InputError
from celpaint.io.frames import write_image
from celpaint.models import registry, zoo
from celpaint.models.checkpoint import (
    CONFIG_NAME,
    ModelConfig,
    checkpoint_directory,
    load_model,
    save_model,
)
from celpaint.ops.metrics import mean_metrics
from celpaint.pipeline.colorizer import choose_device
from celpaint.training.config import (
    ARCH_FIELDS,
    GENERATOR_FIELDS,
    SCHEDULE_FIELDS,
    TrainConfig,
    explicit_fields,
    option_name,
)
from celpaint.training.data import (
    DataSpec,
    EpochSampler,
    PairDataset,
    build_datasets,
)
from celpaint.training.distributed import Dist, distributed_setup, stop_on_signals
from celpaint.training.gan import (
    Trainer,
    config_task,
    discriminator_args,
    generator_args,
    init_weights,
    parameter_count,
)
from celpaint.training.progress import StepUpdate, TrainInfo, TrainProgress, TrainResult
from celpaint.training.rundir import (
    DATA_OPTIONS,
    STATE_FORMAT,
    STATE_NAME,
    RunLock,
    RunWriter,
    check_not_an_input,
    check_output_folder,
    clean_run_folder,
    clear_run_files,
    disk_errors,
    edited_run_options,
    load_train_state,
    sample_grid,
    save_train_state,
    write_run_config,
)
from celpaint.training.validation import colorize_frames, validation_colorizer

log = logging.getLogger("celpaint")


def train(
    config: TrainConfig,
    progress: TrainProgress | None = None,
    explicit: set[str] | None = None,
    stop: threading.Event | None = None,
    handle_signals: bool = True,
) -> TrainResult:
    """Train a model and write the run directory ``config.out``.

    Args:
        config: the options; ``config.resume`` continues the run in ``config.out``.
        progress: callbacks (rank 0 only).
        explicit: names of the options the user set; on resume, only those may override the
            saved run's (default: those that differ from ``TrainConfig()``).
        stop: set it to stop after the current step (everything is saved first).
        handle_signals: in the main thread, Ctrl-C (or SIGTERM) sets ``stop`` instead of
            killing the run; a second one raises ``KeyboardInterrupt`` at once (the last
            checkpoint stays valid). The previous handlers are restored on return.

    Returns:
        How the run ended (``interrupted`` when stopped early).

    Raises:
        InputError: bad options or data, an output folder holding something else, that cannot
            be written, that is part of the data, or that another process is training in.
        CheckpointError: a corrupt state or an architecture that does not match on resume.
        ProcessingError: the disk filled up (the last checkpoint stays valid).
    """
    progress = progress or TrainProgress()
    stop = stop or threading.Event()
    explicit = set(explicit_fields(config) if explicit is None else explicit)
    config = replace(config)  # resolving --init or --resume must not change the caller's
    config.check()
    try:
        dist, device_text = distributed_setup(config.device)
    except ValueError as error:  # more processes than GPUs for NCCL
        raise InputError(str(error)) from None
    reporter = progress if dist.main else TrainProgress()
    lock = RunLock(Path(config.out))
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        # Every process checks the options and reads the data; a failure on any of them stops
        # all of them (instead of leaving the others waiting at the first collective).
        error: CelpaintError | None = None
        try:
            prepared = _prepare(config, explicit, dist, device_text, reporter, stop, lock)
        except CelpaintError as caught:
            error = caught
        failures = dist.gather_errors(error)
        if error is not None:
            raise error
        if failures:
            rank, message = failures[0]
            raise InputError(f"process {rank} of the distributed run failed: {message}")
        if isinstance(prepared, TrainResult):  # a resumed run with nothing left to do
            reporter.end(prepared)
            return prepared
        run, info = prepared
        reporter.start(info)
        signals = stop_on_signals(stop, reporter.stopping) if handle_signals else nullcontext()
        with signals, disk_errors(run.out):
            result = run.fit()
        result.skipped = list(info.skipped)
        reporter.end(result)
        if dist.owns_group:
            # Every process reaches the teardown before any starts it: gloo can abort a process
            # whose peer closes the connection under it.
            dist.barrier()
        return result
    finally:
        torch.set_num_threads(threads)
        if dist.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        lock.release()


def _prepare(
    config: TrainConfig,
    explicit: set[str],
    dist: Dist,
    device_text: str,
    reporter: TrainProgress,
    stop: threading.Event,
    lock: RunLock,
) -> tuple[_Run, TrainInfo] | TrainResult:
    """Check the output folder, resolve the config, read the data, build the networks, and
    (rank 0) lock the run folder, creating it. A resumed run that has nothing left to do
    returns its result at once, before any data is read."""
    out = Path(config.out)
    config, saved_state = _resolve_config(config, explicit, out, lock if dist.main else None)
    if saved_state is not None:
        finished = _finished_result(config, saved_state, out)
        if finished is not None:
            if dist.main:
                # Nothing to train, but what a killed session left half written still goes.
                lock.acquire(create=True)
                clean_run_folder(out)
            return finished
    device, _ = choose_device(device_text, "fp32")
    torch.manual_seed(config.seed + dist.rank)
    random.seed(config.seed + dist.rank)
    generator, gen_config, init_discriminator = _generator(config, explicit, saved_state)
    _check_crop(config, gen_config.size_multiple)
    spec = DataSpec(**{data.name: getattr(config, data.name) for data in fields(DataSpec)})
    train_set, val_set, report = build_datasets(
        spec, config_task(config).takes_line_art, config.crop, config.work_size,
        min_train=config.batch_size * dist.world_size, ffmpeg=config.ffmpeg,
        progress=reporter.loading,
    )  # fmt: skip
    discriminator, disc_config = _discriminator(config, init_discriminator, saved_state)
    description = f"celpaint train --model {config.model} on {spec.describe()}"
    gen_config = replace(gen_config, trained_on=config.trained_on or description)
    disc_config = replace(disc_config, trained_on=f"discriminator of {description}")

    sampler = EpochSampler(
        len(train_set), config.batch_size, config.seed, dist.rank, dist.world_size
    )
    steps_per_epoch = sampler.batches_per_epoch
    total_steps = steps_per_epoch * config.epochs
    trainer = Trainer(config, generator, discriminator, device, total_steps, dist.enabled)
    if saved_state is not None:
        _restore(trainer, saved_state, steps_per_epoch, dist, out)
    run = _Run(
        config=config, trainer=trainer, loader=_loader(config, train_set, sampler, device),
        sampler=sampler, val_set=val_set, train_set=train_set, out=out, progress=reporter,
        dist=dist, stop=stop, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
        gen_config=gen_config, disc_config=disc_config,
        resume_step=trainer.step if saved_state is not None else None,
        epochs_validated=int(saved_state.get("epochs_validated", 0)) if saved_state else 0,
    )  # fmt: skip
    info = TrainInfo(
        out=out, model=config.model, device=str(device), world_size=dist.world_size,
        train_count=report.train_count, val_count=report.val_count,
        skipped=list(report.skipped), steps_per_epoch=steps_per_epoch,
        total_steps=total_steps, start_step=trainer.step, epochs=config.epochs,
        generator_parameters=parameter_count(generator),
        discriminator_parameters=parameter_count(discriminator),
        resumed=saved_state is not None,
    )  # fmt: skip
    if dist.main and not lock.held:
        # Last, so that a run refused for its options or data leaves no folder behind.
        lock.acquire(create=True)
        # Another run may have begun here since the folder was checked.
        check_output_folder(out, config.resume, config.overwrite)
    return run, info


def _resolve_config(
    config: TrainConfig, explicit: set[str], out: Path, lock: RunLock | None
) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The config the run goes with, and the saved state it resumes (None for a new run).

    ``lock`` (rank 0) is taken at once when the folder already has a lock file, so that a
    second process on a busy run stops before reading anything."""
    check_output_folder(out, config.resume, config.overwrite, _data_paths(config), lock)
    if not config.resume:
        return config, None
    saved_state = load_train_state(out / STATE_NAME)
    edited = edited_run_options(out, saved_state["config"])
    if edited:
        log.warning(
            "%s differs from the run's saved state in %s; the run continues with the saved "
            "options and rewrites it (pass changes as options: --epochs lengthens a run)",
            out / "config.json", ", ".join(edited),
        )  # fmt: skip
    config = resolve_resume(config, saved_state["config"], explicit)
    config.check()
    # The data paths may come from the saved run.
    check_not_an_input(out, _data_paths(config))
    return config, saved_state


def _finished_result(
    config: TrainConfig, saved_state: dict[str, Any], out: Path
) -> TrainResult | None:
    """The result of a resumed run that has trained every step of its ``epochs`` (perhaps
    fewer than before) and reported every epoch; None if anything is left to do."""
    steps_per_epoch = int(saved_state.get("steps_per_epoch") or 0)
    step = int(saved_state["step"])
    if not steps_per_epoch or step < steps_per_epoch * config.epochs:
        return None
    epochs_done = step // steps_per_epoch
    if int(saved_state.get("epochs_validated", 0)) < epochs_done:
        return None
    return TrainResult(
        out=out, step=step, total_steps=step, epochs_done=epochs_done, interrupted=False,
        seconds=0.0, images_per_second=0.0, start_step=step, finished_before=True,
    )  # fmt: skip


def _data_paths(config: TrainConfig) -> dict[str, str | None]:
    return {name: getattr(config, name) for name in DATA_OPTIONS}


def _generator(
    config: TrainConfig, explicit: set[str], saved_state: dict[str, Any] | None
) -> tuple[nn.Module, ModelConfig, nn.Module | None]:
    """The generator to train (weights still to be restored on resume), its checkpoint config
    (``trained_on`` still empty), and the discriminator that came with ``--init``, if any."""
    init_discriminator = None
    if saved_state is not None:
        saved = ModelConfig.from_dict(saved_state["generator_config"], STATE_NAME)
        arch, arch_args, size_multiple = saved.arch, dict(saved.arch_args), saved.size_multiple
        generator = registry.build(arch, **arch_args)
    elif config.init:
        generator, init_config, init_discriminator = _load_init(config, explicit)
        generator.train()
        arch, arch_args = init_config.arch, dict(init_config.arch_args)
        size_multiple = init_config.size_multiple
    else:
        arch, arch_args = "unet", generator_args(config)
        generator = registry.build(arch, **arch_args)
        size_multiple = 2**config.depth
        init_weights(generator)
    if config.size_multiple is not None:
        size_multiple = config.size_multiple
    task = config_task(config)
    gen_config = ModelConfig(
        arch=arch, arch_args=arch_args, input_kind=task.input_kind, output=task.output,
        size_multiple=size_multiple, work_size=config.work_size,
    )  # fmt: skip
    return generator, gen_config, init_discriminator


def _discriminator(
    config: TrainConfig, init_discriminator: nn.Module | None, saved_state: dict[str, Any] | None
) -> tuple[nn.Module, ModelConfig]:
    """The discriminator to train (``--init``'s, or a new one) and its checkpoint config."""
    if init_discriminator is not None:
        discriminator = init_discriminator.train()
    else:
        discriminator = registry.build("patchgan", **discriminator_args(config))
        if saved_state is None:
            init_weights(discriminator)
    task = config_task(config)
    disc_config = ModelConfig(
        arch="patchgan", arch_args=discriminator_args(config), input_kind=task.input_kind,
        output=task.output, size_multiple=1, work_size=config.work_size,
    )  # fmt: skip
    return discriminator, disc_config


def _check_crop(config: TrainConfig, size_multiple: int) -> None:
    """Raise ``InputError`` unless both networks can train on ``config.crop`` crops."""
    if config.crop % size_multiple:
        larger = -(-config.crop // size_multiple) * size_multiple
        raise InputError(
            f"--crop {config.crop} is not a multiple of the generator's size multiple "
            f"{size_multiple} (2**depth); use --crop {larger} or a shallower --depth"
        )
    smallest = 3 * 2**config.disc_layers
    if config.crop < smallest:
        raise InputError(
            f"--crop {config.crop} is too small for a discriminator with {config.disc_layers} "
            f"layers (at least {smallest}); use a larger --crop or fewer --disc-layers"
        )


def _restore(
    trainer: Trainer, saved_state: dict[str, Any], steps_per_epoch: int, dist: Dist, out: Path
) -> None:
    """Put the saved state of a resumed run into ``trainer``.

    Raises:
        InputError: the data now gives another number of steps per epoch.
        CheckpointError: the state does not fit the networks.
    """
    previous = int(saved_state.get("steps_per_epoch", steps_per_epoch))
    if previous != steps_per_epoch:
        raise InputError(
            f"--resume: the training data now gives {steps_per_epoch} steps per epoch, the "
            f"run had {previous}; resume with the same data and batch size, or start a new "
            f"run with --init {out}"
        )
    try:
        trainer.load_state_dict(saved_state, restore_rng=dist.rank == 0)
    except (KeyError, RuntimeError, ValueError) as error:
        raise CheckpointError(
            f"{out / STATE_NAME} does not fit the run's networks ({str(error)[:200]}); "
            "start over with --overwrite"
        ) from None
    if dist.rank > 0:
        # Only rank 0's generator state is saved; the others draw fresh dropout masks.
        torch.manual_seed(trainer.config.seed * 7919 + trainer.step * 31 + dist.rank)


def _loader(
    config: TrainConfig, train_set: PairDataset, sampler: EpochSampler, device: torch.device
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=config.workers > 0,
        # Its own generator: by default each new iterator draws a seed from the global RNG,
        # which a resumed run (a new iterator mid-epoch) would draw at another moment, so
        # dropout masks after --resume would differ from an uninterrupted run's.
        generator=torch.Generator().manual_seed(config.seed),
    )


def resolve_resume(config: TrainConfig, saved: dict[str, Any], explicit: set[str]) -> TrainConfig:
    """The config a resumed run continues with: the saved one, with run-time options
    (device, workers, data paths, save interval...) and ``epochs`` taken from ``config`` where
    given. A new ``epochs`` changes the run's length: its learning-rate schedule is that of
    the new length from the resumed step on.

    Raises:
        CheckpointError: architecture options differ from the run's (all of them named).
        InputError: schedule options differ (the run would not continue its schedule).
    """
    previous = TrainConfig.from_dict(saved)
    arch = _differences(config, previous, explicit, ARCH_FIELDS)
    if arch:
        raise CheckpointError(
            f"--resume keeps the architecture of the run in {config.out}, and these options "
            f"differ from it: {arch}; drop them, or start a new run with --init {config.out}"
        )
    schedule = _differences(config, previous, explicit, SCHEDULE_FIELDS, ("epochs",))
    if schedule:
        raise InputError(
            f"--resume continues the schedule of the run in {config.out}, and these options "
            f"differ from it: {schedule}; drop them (only --epochs may change: it lengthens or "
            f"shortens the run), or start a new run with --init {config.out} to train further "
            "with other settings"
        )
    merged = previous.to_dict()
    for name in explicit:
        if name not in ARCH_FIELDS and (name not in SCHEDULE_FIELDS or name == "epochs"):
            merged[name] = getattr(config, name)
    merged["resume"] = True
    merged["overwrite"] = False
    merged["out"] = config.out
    return TrainConfig.from_dict(merged)


def _differences(
    config: TrainConfig,
    previous: TrainConfig,
    explicit: set[str],
    names: tuple[str, ...],
    free: tuple[str, ...] = (),
) -> str:
    """The options among ``names`` (but ``free``) set in ``config`` to other values than
    ``previous``'s, as "--depth 4 (the run's: 3), ..."; empty if none."""
    return ", ".join(
        f"{option_name(name)} {getattr(config, name)!r} (the run's: {getattr(previous, name)!r})"
        for name in names
        if name in explicit
        and name not in free
        and getattr(config, name) != getattr(previous, name)
    )


def _load_init(
    config: TrainConfig, explicit: set[str]
) -> tuple[nn.Module, ModelConfig, nn.Module | None]:
    """Load ``--init``: the generator, its config, and the discriminator of a run directory
    when it fits the run (else None). The generator's U-Net options replace ``config``'s.

    Raises:
        InputError: the model is of another variant, or fixes an option the user set.
    """
    directory = zoo.generator_directory(config.init)
    generator, model_config = load_model(directory)
    task, theirs = config_task(config), model_config.task
    if theirs is not task:
        raise InputError(
            f"--init {config.init} is a {theirs.input_kind} -> {theirs.output} model, but "
            f"--model {config.model} trains {task.input_kind} -> {task.output}; use --model "
            f"{theirs.name}"
        )
    if model_config.arch == "unet":
        for name in GENERATOR_FIELDS:
            value = model_config.arch_args.get(name, getattr(config, name))
            if name in explicit and value != getattr(config, name):
                raise InputError(
                    f"--init {config.init} fixes the generator's {name} to {value!r}; drop "
                    f"--{name.replace('_', '-')}"
                )
            setattr(config, name, value)
    discriminator = None
    disc_dir = checkpoint_directory(directory.parent / "discriminator")
    is_run = directory.name in ("generator", ".generator.previous")
    if is_run and (disc_dir / CONFIG_NAME).is_file():
        try:
            candidate, disc_config = load_model(disc_dir)
        except CheckpointError as error:
            log.warning("--init: ignoring the discriminator of %s (%s)", config.init, error)
        else:
            if disc_config.arch_args == discriminator_args(config):
                discriminator = candidate
    return generator, model_config, discriminator


@dataclass
class _Run:
    """The loop of ``train()``: steps, periodic checkpoints, validation, stopping."""

    config: TrainConfig
    trainer: Trainer
    loader: Any
    sampler: Any
    val_set: Any
    train_set: Any
    out: Path
    progress: TrainProgress
    dist: Dist
    stop: threading.Event
    steps_per_epoch: int
    total_steps: int
    gen_config: ModelConfig
    disc_config: ModelConfig
    resume_step: int | None = None
    epochs_validated: int = 0
    last_metrics: dict[str, float] = field(default_factory=dict)
    writer: RunWriter | None = None
    saved_step: int = -1

    def fit(self) -> TrainResult:
        trainer, config = self.trainer, self.config
        if self.dist.main:
            # Only now, with everything checked (and the run folder locked), is anything of a
            # previous run replaced.
            clean_run_folder(self.out)
            if config.overwrite:
                clear_run_files(self.out)
            self.writer = RunWriter(self.out, self.resume_step)
            write_run_config(self.out, config)
        self.dist.barrier()
        if self.resume_step is not None:
            self.saved_step = trainer.step
        started = time.perf_counter()
        start_step = trainer.step
        images = config.batch_size * self.dist.world_size
        speed = 0.0
        interrupted = False
        # A run stopped right after an epoch's last step still owes that epoch's report.
        self._finish_epochs(trainer.step // self.steps_per_epoch)
        while trainer.step < self.total_steps and not interrupted:
            epoch, batch_index = divmod(trainer.step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch, batch_index)
            tick = time.perf_counter()
            for batch in self.loader:
                if self.dist.any(self.stop.is_set(), trainer.device):
                    interrupted = True
                    break
                lr = trainer.lr
                losses = trainer.train_step(batch)
                now = time.perf_counter()
                current = images / max(now - tick, 1e-9)
                tick = now
                # The first step includes warm-up; a running average keeps the rate steady.
                speed = current if trainer.step - start_step == 1 else 0.9 * speed + 0.1 * current
                batch_index = (trainer.step - 1) % self.steps_per_epoch + 1
                if self.writer is not None:
                    self.writer.log(trainer.step, epoch + 1, losses, lr)
                remaining = (self.total_steps - trainer.step) * images / max(speed, 1e-9)
                self.progress.step(
                    StepUpdate(
                        step=trainer.step, total_steps=self.total_steps, epoch=epoch + 1,
                        epochs=config.epochs, batch=batch_index,
                        steps_per_epoch=self.steps_per_epoch, losses=losses, lr=lr,
                        images_per_second=speed, eta_seconds=remaining,
                    )
                )  # fmt: skip
                if batch_index == self.steps_per_epoch:
                    break
                if config.save_every and trainer.step % config.save_every == 0:
                    self.save("every")
            if not interrupted:
                self._finish_epochs(trainer.step // self.steps_per_epoch)
        self.save("stop" if interrupted else "end")
        seconds = time.perf_counter() - started
        trained = (trainer.step - start_step) * images
        return TrainResult(
            out=self.out, step=trainer.step, total_steps=self.total_steps,
            epochs_done=trainer.step // self.steps_per_epoch, interrupted=interrupted,
            seconds=seconds, images_per_second=trained / seconds if seconds > 0 else 0.0,
            metrics=dict(self.last_metrics), start_step=start_step,
        )  # fmt: skip

    def _finish_epochs(self, epochs_done: int) -> None:
        """Validate, draw samples and save for each finished epoch not yet reported."""
        while self.epochs_validated < epochs_done:
            epoch = self.epochs_validated + 1
            metrics: dict[str, float] = {}
            if self.dist.main:
                self.progress.validating(epoch)
                metrics = self.validate(epoch)
            self.epochs_validated = epoch
            self.last_metrics = metrics
            self.save("epoch", force=True)
            self.progress.epoch_end(epoch, metrics)

    def validate(self, epoch: int) -> dict[str, float]:
        """Score the validation frames and write ``samples/epoch_NNN.png`` and metrics.json."""
        trainer, config = self.trainer, self.config
        validating = len(self.val_set) > 0
        # Without validation data the grid shows training frames (whole, not cropped).
        grid_set = self.val_set if validating else self.train_set
        shown = min(config.samples, len(grid_set))
        scored = 0
        if validating:
            scored = len(self.val_set) if config.val_limit == 0 else config.val_limit
            scored = min(scored, len(self.val_set))
        # The grid's frames are the first validation frames: each is colorized once for both.
        colorizer = validation_colorizer(trainer.generator, self.gen_config, trainer.device)
        columns, rows = colorize_frames(colorizer, grid_set, shown, scored)
        if columns and self.writer is not None:
            grid = sample_grid(columns, config.crop)
            write_image(self.out / "samples" / f"epoch_{epoch:03d}.png", grid)
        if not validating:
            return {}
        metrics = mean_metrics(rows)
        if self.writer is not None:
            entry = {"epoch": epoch, "step": trainer.step, "frames": len(rows), **metrics}
            self.writer.add_metrics(entry, config.model)
        return metrics

    def save(self, reason: str, force: bool = False) -> None:
        """Write the training state, both networks and the logs (rank 0), atomically each."""
        trainer = self.trainer
        if trainer.step == self.saved_step and not force:
            return
        if self.dist.main and self.writer is not None:
            state = trainer.state_dict()
            state.update(
                format_version=STATE_FORMAT,
                config=self.config.to_dict(),
                steps_per_epoch=self.steps_per_epoch,
                total_steps=self.total_steps,
                epoch=trainer.step // self.steps_per_epoch,
                epochs_validated=self.epochs_validated,
                generator_config=self.gen_config.to_dict(),
                discriminator_config=self.disc_config.to_dict(),
            )
            # The losses up to this step before the state: --resume drops rows after the saved
            # step, but could not bring back rows that a crash kept from being written.
            self.writer.flush()
            # Then the state: it alone is what --resume reads, and it is complete by itself.
            save_train_state(self.out / STATE_NAME, state)
            save_model(trainer.generator, self.out / "generator", self.gen_config)
            save_model(trainer.discriminator, self.out / "discriminator", self.disc_config)
            if reason != "every":
                self.writer.plot()
            self.progress.saved(trainer.step, reason)
        self.saved_step = trainer.step
        self.dist.barrier()
