"""Checkpoints: save -> load gives identical outputs; writes are atomic; no pickled code runs."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from celpaint.errors import CheckpointError
from celpaint.models import checkpoint as checkpoint_module
from celpaint.models import zoo
from celpaint.models.checkpoint import ModelConfig, load_model, save_model
from celpaint.models.registry import build
from celpaint.training.loop import (
    STATE_FORMAT,
    TrainConfig,
    Trainer,
    discriminator_args,
    generator_args,
    load_train_state,
    save_train_state,
)
from tests.helpers import Killed, die_at

TINY = TrainConfig(depth=3, base_channels=4, max_channels=8, disc_base_channels=4)


def _stepped_trainer() -> Trainer:
    """A trainer after one step: batch-norm statistics, Adam moments and schedules are all
    past their initial values."""
    torch.manual_seed(0)
    generator = build("unet", **generator_args(TINY))
    discriminator = build("patchgan", **discriminator_args(TINY))
    trainer = Trainer(TINY, generator, discriminator, "cpu", total_steps=4)
    batch = {
        "rgb": torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8),
        "line_art": torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8),
    }
    trainer.train_step(batch)
    return trainer


def _trained_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    """A generator and discriminator after one step, so batch-norm statistics are non-trivial."""
    trainer = _stepped_trainer()
    return trainer.generator, trainer.discriminator


def _config(arch: str, args: dict) -> ModelConfig:
    return ModelConfig(arch, args, "lineart", "rgb", size_multiple=8, work_size=64)


def test_round_trip_gives_identical_outputs(tmp_path):
    generator, discriminator = _trained_pair()
    save_model(generator, tmp_path / "g", _config("unet", generator_args(TINY)))
    save_model(discriminator, tmp_path / "d", _config("patchgan", discriminator_args(TINY)))
    x = torch.rand(1, 1, 32, 40) * 2 - 1
    pair = torch.rand(1, 4, 32, 40) * 2 - 1
    loaded_g, config = load_model(tmp_path / "g")
    loaded_d, _ = load_model(tmp_path / "d")
    # The trainer keeps weights channels-last; compare in the layout the loaded models use, so
    # that both run the same convolution kernels.
    generator = generator.to(memory_format=torch.contiguous_format).eval()
    discriminator = discriminator.to(memory_format=torch.contiguous_format).eval()
    with torch.no_grad():
        assert torch.equal(generator(x), loaded_g(x))
        assert torch.equal(discriminator(pair), loaded_d(pair))
    assert config.arch_args == generator_args(TINY)


def test_half_precision_checkpoint_is_close(tmp_path):
    generator, _ = _trained_pair()
    save_model(generator, tmp_path / "g", _config("unet", generator_args(TINY)), half=True)
    loaded, _ = load_model(tmp_path / "g")
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = generator.to(memory_format=torch.contiguous_format).eval()(x)
        assert torch.allclose(expected, loaded(x), atol=2e-2)


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    generator, _ = _trained_pair()
    target = tmp_path / "g"
    save_model(generator, target, _config("unet", generator_args(TINY)))
    before = (target / "model.safetensors").read_bytes()

    def crash(*args, **kwargs):
        Path(args[1]).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "save_file", crash)
    with torch.no_grad():
        for parameter in generator.parameters():
            parameter.add_(1.0)
    with pytest.raises(OSError):
        save_model(generator, target, _config("unet", generator_args(TINY)))
    assert (target / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]
    load_model(target)


def test_train_state_round_trip_and_atomic_write(tmp_path, monkeypatch):
    state = {
        "format_version": STATE_FORMAT,
        "step": 7,
        "weights": torch.arange(4.0),
        "config": {"model": "pix2pix", "lr": 2e-4},
        "rng": {"python": (3, (1, 2), None)},
    }
    path = save_train_state(tmp_path / "train_state.pt", state)
    loaded = load_train_state(path)
    assert loaded["step"] == 7 and torch.equal(loaded["weights"], torch.arange(4.0))
    assert loaded["config"] == state["config"]

    def crash(obj, file, *args, **kwargs):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        save_train_state(path, {**state, "step": 8})
    assert load_train_state(path)["step"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_state.pt"]


class _Tripwire:
    """Unpickling this would run code: ``__reduce__`` names a function to call."""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_train_state_loading_runs_no_pickled_code(tmp_path):
    tripwire = _Tripwire()
    tripwire.marker = str(tmp_path / "code-ran")
    torch.save({"format_version": STATE_FORMAT, "payload": tripwire}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="corrupt or not a celpaint training state"):
        load_train_state(tmp_path / "evil.pt")
    assert not (tmp_path / "code-ran").exists()


def test_train_state_of_another_format_is_refused(tmp_path):
    torch.save({"format_version": 99}, tmp_path / "train_state.pt")
    with pytest.raises(CheckpointError, match="format 99"):
        load_train_state(tmp_path / "train_state.pt")
    with pytest.raises(CheckpointError, match="no run to resume"):
        load_train_state(tmp_path / "missing" / "train_state.pt")


def test_trainer_state_restores_networks_and_optimizers():
    trainer = _stepped_trainer()
    state = trainer.state_dict()
    torch.manual_seed(1)
    other = Trainer(
        TINY,
        build("unet", **generator_args(TINY)),
        build("patchgan", **discriminator_args(TINY)),
        "cpu",
        total_steps=4,
    )
    other.load_state_dict(state)
    for a, b in zip(trainer.generator.state_dict().values(),
                    other.generator.state_dict().values(), strict=True):  # fmt: skip
        assert torch.equal(a, b)
    # Adam's moments after the step (a fresh optimizer has none), and the scheduled rates.
    for optimizer, restored in ((trainer.optimizer_g, other.optimizer_g),
                                (trainer.optimizer_d, other.optimizer_d)):  # fmt: skip
        saved, loaded = optimizer.state_dict(), restored.state_dict()
        assert saved["state"] and saved["state"].keys() == loaded["state"].keys()
        for key, moments in saved["state"].items():
            for name in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(moments[name], loaded["state"][key][name])
        assert saved["param_groups"] == loaded["param_groups"]
    assert other.step == trainer.step == 1
    assert torch.equal(torch.get_rng_state(), state["rng"]["torch"])


def test_saved_checkpoint_is_readable_by_others(tmp_path):
    generator, _ = _trained_pair()
    target = save_model(generator, tmp_path / "g", _config("unet", generator_args(TINY)))
    assert target.stat().st_mode & 0o777 == 0o755
    for path in target.iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path.name


def test_chroma_scale_is_saved_and_checked(tmp_path):
    generator, _ = _trained_pair()
    config = _config("unet", generator_args(TINY))
    config.chroma_scale = 0.6
    save_model(generator, tmp_path / "g", config)
    assert load_model(tmp_path / "g")[1].chroma_scale == 0.6
    with pytest.raises(CheckpointError, match="chroma_scale"):
        ModelConfig("unet", {}, "lineart", "rgb", size_multiple=8, chroma_scale=-1)


def test_a_format_1_config_without_the_newer_fields_loads(tmp_path):
    """Checkpoints written before the task field existed load unchanged, with its default."""
    model = build("unet", in_channels=1, out_channels=2, depth=3, base_channels=4, max_channels=8)
    args = dict(in_channels=1, out_channels=2, depth=3, base_channels=4, max_channels=8)
    config = ModelConfig("unet", args, "grayscale", "ab", size_multiple=8, work_size=64)
    directory = save_model(model, tmp_path / "old", config)
    config_path = directory / "config.json"
    data = json.loads(config_path.read_text())
    # As celpaint 0.1.0 wrote it: format 1, no "task".
    for newer in ("task",):
        data.pop(newer)
    config_path.write_text(json.dumps(data))
    loaded, config = load_model(directory)
    assert config.task.name == "lab" and config.format_version == 1
    frames = torch.rand(1, 1, 32, 32)
    assert torch.equal(loaded(frames), model.eval()(frames))
    # A task that contradicts the kinds is refused, not guessed.
    data["task"] = "pix2pix"
    config_path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="says task 'pix2pix'"):
        load_model(directory)


def _output(model: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(5)
    with torch.no_grad():
        return model.eval()(torch.rand(1, 1, 32, 32) * 2 - 1)


def test_a_kill_at_any_step_of_a_save_leaves_a_loadable_checkpoint(tmp_path, monkeypatch):
    torch.manual_seed(0)
    args = generator_args(TINY)
    old, new = build("unet", **args), build("unet", **args)
    expected = {"old": _output(old), "new": _output(new)}
    config = _config("unet", args)
    # How many renames and removals replacing a checkpoint takes, counted on a dry run.
    save_model(old, tmp_path / "dry" / "generator", config)
    with monkeypatch.context() as patch:
        counted = die_at(patch, 10**9)
        save_model(new, tmp_path / "dry" / "generator", config)
    steps = len(counted)
    assert steps >= 3  # old aside, new in place, old removed
    # Killed at each of them, and (k = steps + 1) not at all.
    for k in range(1, steps + 2):
        run = tmp_path / f"run{k}"
        save_model(old, run / "generator", config)
        with monkeypatch.context() as patch:
            calls = die_at(patch, k)
            try:
                save_model(new, run / "generator", config)
            except Killed:
                assert k <= steps
            assert len(calls) >= min(k, steps)
        # Every state in between: the run (and its generator/ path) loads the old or the new.
        for path in (run, run / "generator"):
            loaded, _ = load_model(path)
            assert any(torch.equal(_output(loaded), out) for out in expected.values()), (k, path)
        assert zoo.generator_directory(run).name in ("generator", ".generator.previous")
        # The next run finishes what the killed one left: one checkpoint, no temporaries.
        checkpoint_module.recover_directory(run / "generator")
        assert sorted(p.name for p in run.iterdir()) == ["generator"], k
        loaded, _ = load_model(run / "generator")
        assert any(torch.equal(_output(loaded), out) for out in expected.values())
        # A later save replaces it as usual.
        save_model(new, run / "generator", config)
        assert torch.equal(_output(load_model(run)[0]), expected["new"])


def test_recovery_keeps_the_staging_folders_of_live_processes(tmp_path):
    generator, _ = _trained_pair()
    target = save_model(generator, tmp_path / "generator", _config("unet", generator_args(TINY)))
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    dead, alive = int(finished.stdout), os.getppid()
    for pid in (dead, alive):
        (tmp_path / f".generator.tmp-{pid}-abc").mkdir()
    (tmp_path / ".generator.old").mkdir()
    checkpoint_module.recover_directory(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f".generator.tmp-{alive}-abc",
        "generator",
    ]


def _tiny_checkpoint(directory: Path) -> Path:
    model = build("unet", **generator_args(TINY))
    return save_model(model, directory, _config("unet", generator_args(TINY)))


def _edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if key in data:
            data[key] = value
        else:
            data["arch_args"][key] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("channels", [3000, 10**9])
def test_absurd_sizes_in_config_fail_fast_without_allocating(tmp_path, channels):
    directory = _tiny_checkpoint(tmp_path / "g")
    _edit_config(directory, base_channels=channels, max_channels=channels)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(CheckpointError) as caught:
        load_model(directory)
    assert time.perf_counter() - started < 2.0
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100 * 1024  # 3000 channels would take 4.6 GB
    message = str(caught.value)
    assert len(message) < 600 and "\n" not in message
    assert "re-export" in message


def test_a_config_that_does_not_fit_names_a_few_weights_and_counts_the_rest(tmp_path):
    directory = _tiny_checkpoint(tmp_path / "g")
    _edit_config(directory, depth=7, size_multiple=128)
    with pytest.raises(CheckpointError, match=r"weights \(.*and \d+ more\) missing") as caught:
        load_model(directory)
    assert len(str(caught.value)) < 600


@pytest.mark.parametrize("value", [0, -8, 2.5, "8", None])
def test_size_multiple_must_be_a_positive_whole_number(tmp_path, value):
    directory = _tiny_checkpoint(tmp_path / "g")
    _edit_config(directory, size_multiple=value)
    with pytest.raises(CheckpointError, match="size_multiple"):
        load_model(directory)


def test_a_size_multiple_below_two_to_the_depth_feeds_frames_unpadded(tmp_path):
    directory = _tiny_checkpoint(tmp_path / "g")
    _edit_config(directory, size_multiple=4)  # depth 3: the U-Net pads its deep levels
    model, config = load_model(directory)
    assert config.size_multiple == 4
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 20, 12)).shape[-2:] == (20, 12)
