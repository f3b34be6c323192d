"""train(): the run directory, resume, interrupts, --init and DDP."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import threading
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from celpaint.errors import CheckpointError, InputError
from celpaint.io.frames import read_image
from celpaint.models.checkpoint import load_model, unwrap
from celpaint.training import gan
from celpaint.training.config import TrainConfig
from celpaint.training.loop import train
from celpaint.training.losses import LOSS_NAMES
from celpaint.training.progress import TrainProgress
from celpaint.training.rundir import STATE_NAME, load_train_state
from tests.conftest import make_checkpoint
from tests.training.test_data import make_pairs

TINY_NETS = dict(depth=3, base_channels=4, max_channels=8, disc_base_channels=4)


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    values = dict(
        model="pix2pix", out=str(out), sketch=str(data / "sketch"), color=str(data / "color"),
        epochs=2, batch_size=2, crop=24, work_size=64, workers=0, val_fraction=0.2,
        samples=2, save_every=0, **TINY_NETS,
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Recorder(TrainProgress):
    def __init__(self, stop_at: int | None = None, stop: threading.Event | None = None):
        self.steps: list[dict] = []
        self.saves: list[tuple[int, str]] = []
        self.epochs: list[tuple[int, dict]] = []
        self.info = None
        self.result = None
        self.stop_at = stop_at
        self.stop = stop

    def start(self, info):
        self.info = info

    def step(self, update):
        self.steps.append({"step": update.step, **update.losses})
        if self.stop_at is not None and update.step == self.stop_at and self.stop is not None:
            self.stop.set()

    def saved(self, step, reason):
        self.saves.append((step, reason))

    def epoch_end(self, epoch, metrics):
        self.epochs.append((epoch, metrics))

    def end(self, result):
        self.result = result


def test_train_writes_the_run_directory(pairs, tmp_path):
    out = tmp_path / "run"
    recorder = Recorder()
    result = train(tiny_config(pairs, out, save_every=1), recorder)
    assert not result.interrupted and result.step == result.total_steps == 4
    assert recorder.info.train_count == 4 and recorder.info.val_count == 1
    generator, config = load_model(out / "generator")
    assert (config.input_kind, config.output, config.size_multiple) == ("lineart", "rgb", 8)
    assert config.arch_args["depth"] == 3 and config.work_size == 64
    _, disc_config = load_model(out / "discriminator")
    assert disc_config.arch == "patchgan"
    with (out / "losses.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert set(LOSS_NAMES) <= set(rows[0]) and {"epoch", "lr"} <= set(rows[0])
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert {"psnr", "ssim", "ciede2000", "accuracy"} <= set(metrics["epochs"][0])
    grid = read_image(out / "samples" / "epoch_002.png")
    assert grid.shape == (3 * 24 + 2 * 4, 1 * 24, 3)  # one validation frame, three rows
    assert read_image(out / "loss_curves.png").shape[2] == 3
    state = load_train_state(out / STATE_NAME)
    assert state["step"] == 4 and state["config"]["model"] == "pix2pix"
    # --save-every 1: checkpoints after every step; the end of an epoch saves as "epoch".
    assert recorder.saves == [(1, "every"), (2, "epoch"), (3, "every"), (4, "epoch")]
    assert [e for e, _ in recorder.epochs] == [1, 2]
    assert not list(out.glob(".*"))  # no temporary files left


def test_a_smaller_size_multiple_trains_on_crops_of_varied_sizes(pairs, tmp_path, monkeypatch):
    seen = []
    step = gan.Trainer.d_step

    def spy(self, batch):
        seen.append(tuple(batch.source.shape[-2:]))
        return step(self, batch)

    monkeypatch.setattr(gan.Trainer, "d_step", spy)
    out = tmp_path / "run"
    config = tiny_config(pairs, out, size_multiple=4, crop=48, epochs=4)
    assert train(config, Recorder()).step == 8
    # Half the crop is 24, also the smallest crop the 3-layer discriminator takes.
    assert all(24 <= h <= 48 and 24 <= w <= 48 for h, w in seen)
    assert all(h % 4 == 0 and w % 4 == 0 for h, w in seen)
    # Sizes that are not multiples of 2**depth = 8: the U-Net pads its deep levels.
    assert len(set(seen)) > 1 and any(h % 8 or w % 8 for h, w in seen)
    assert load_model(out / "generator")[1].size_multiple == 4


def test_random_shape_cuts_one_window_from_every_tensor():
    torch.manual_seed(0)
    rgb = torch.arange(2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
    batch = {"rgb": rgb, "line_art": rgb[:, :1] * 7}
    for _ in range(20):
        cut = gan._random_shape(batch, 8)
        h, w = cut["rgb"].shape[-2:]
        assert h in (16, 24, 32) and w in (16, 24, 32)
        assert torch.equal(cut["line_art"], cut["rgb"][:, :1] * 7)


@pytest.mark.parametrize("value", [3, 12, 512])
def test_size_multiple_must_be_a_power_of_two_dividing_the_crop(value):
    with pytest.raises(InputError, match="--size-multiple"):
        TrainConfig(crop=256, size_multiple=value).check()


def test_lab_run_on_color_frames_alone(pairs, tmp_path):
    out = tmp_path / "lab"
    config = tiny_config(pairs, out, model="lab", sketch=None, epochs=1)
    train(config)
    _, model_config = load_model(out / "generator")
    assert (model_config.input_kind, model_config.output) == ("grayscale", "ab")
    assert model_config.arch_args["out_channels"] == 2


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def test_resume_continues_with_identical_state(pairs, tmp_path):
    straight = tmp_path / "straight"
    train(tiny_config(pairs, straight, epochs=3))

    stop = threading.Event()
    recorder = Recorder(stop_at=3, stop=stop)
    split = tmp_path / "split"
    first = train(tiny_config(pairs, split, epochs=3), recorder, stop=stop)
    assert first.interrupted and first.step == 3
    assert recorder.saves[-1] == (3, "stop")
    assert load_train_state(split / STATE_NAME)["step"] == 3
    resumed = train(tiny_config(pairs, split, resume=True), Recorder(), explicit={"resume"})
    assert not resumed.interrupted and resumed.step == 6

    for name in ("generator", "discriminator"):
        a, b = _weights(straight / name), _weights(split / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key} differs after resume"
    assert (straight / "losses.csv").read_text() == (split / "losses.csv").read_text()
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((split / "metrics.json").read_text())
    assert a == b


def test_ctrl_c_stops_after_the_step_and_saves(pairs, tmp_path):
    class Interrupting(Recorder):
        def step(self, update):
            super().step(update)
            if update.step == 2:
                os.kill(os.getpid(), signal.SIGINT)

    previous = signal.getsignal(signal.SIGINT)
    recorder = Interrupting()
    result = train(tiny_config(pairs, tmp_path / "run", epochs=5), recorder)
    assert result.interrupted and result.step == 2
    assert load_train_state(tmp_path / "run" / STATE_NAME)["step"] == 2
    assert signal.getsignal(signal.SIGINT) is previous  # handlers restored


def test_output_folder_rules(pairs, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(pairs, out, epochs=1))
    with pytest.raises(InputError, match="holds another training run"):
        train(tiny_config(pairs, out, epochs=1))
    (out / "notes.txt").write_text("mine")
    train(tiny_config(pairs, out, epochs=1, overwrite=True))
    assert (out / "notes.txt").read_text() == "mine"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "photo.png").write_bytes(b"x")
    with pytest.raises(InputError, match="not empty"):
        train(tiny_config(pairs, foreign, epochs=1))
    with pytest.raises(InputError, match="no run to continue"):
        train(tiny_config(pairs, tmp_path / "empty", resume=True))
    with pytest.raises(InputError, match="pass one of them"):
        train(tiny_config(pairs, out, resume=True, overwrite=True))


def test_bad_data_leaves_an_existing_run_untouched(pairs, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(pairs, out, epochs=1))
    before = (out / "generator" / "model.safetensors").read_bytes()
    with pytest.raises(InputError, match="fewer than one batch"):
        train(tiny_config(pairs, out, epochs=1, overwrite=True, batch_size=8))
    assert (out / "generator" / "model.safetensors").read_bytes() == before


def test_resume_refuses_another_architecture_or_schedule_naming_every_difference(pairs, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(pairs, out, epochs=1))
    arch = tiny_config(pairs, out, resume=True, depth=4, norm="instance")
    with pytest.raises(CheckpointError, match=r"--depth 4 \(the run's: 3\), --norm 'instance'"):
        train(arch, explicit={"resume", "depth", "norm"})
    schedule = tiny_config(pairs, out, resume=True, lr=1e-3, seed=5, epochs=2)
    with pytest.raises(InputError, match=r"--lr 0.001 \(the run's: 0.0002\), --seed 5 \(the"):
        train(schedule, explicit={"resume", "lr", "seed", "epochs"})


def test_a_finished_run_resumes_to_nothing_and_more_epochs_extend_it(pairs, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(pairs, out, epochs=1))
    state_file = (out / STATE_NAME).read_bytes()
    recorder = Recorder()
    done = train(tiny_config(pairs, out, resume=True), recorder, explicit={"resume"})
    assert done.finished_before and not done.interrupted
    assert (done.step, done.epochs_done) == (2, 1)
    assert recorder.info is None and recorder.steps == [] and recorder.result is done
    assert (out / STATE_NAME).read_bytes() == state_file

    recorder = Recorder()
    more = train(tiny_config(pairs, out, resume=True, epochs=2), recorder,
                 explicit={"resume", "epochs"})  # fmt: skip
    assert not more.finished_before and (more.start_step, more.step) == (2, 4)
    assert (recorder.info.start_step, recorder.info.total_steps, recorder.info.epochs) == (2, 4, 2)
    assert [s["step"] for s in recorder.steps] == [3, 4]
    assert [e for e, _ in recorder.epochs] == [2]
    state = load_train_state(out / STATE_NAME)
    assert state["config"]["epochs"] == 2 and state["epochs_validated"] == 2
    # The learning rate follows the 4-step schedule from step 2 on: constant for the first
    # half (decay_start 0.5), not the 2-step schedule's nearly 0.
    with (out / "losses.csv").open() as handle:
        rates = [float(row["lr"]) for row in csv.DictReader(handle)]
    assert rates[2] == pytest.approx(2e-4)
    assert json.loads((out / "config.json").read_text())["epochs"] == 2


def test_the_run_folder_holds_its_options_as_config_json(pairs, tmp_path, caplog):
    out = tmp_path / "run"
    config = tiny_config(pairs, out, epochs=1)
    train(config)
    written = json.loads((out / "config.json").read_text())
    expected = config.to_dict()
    del expected["resume"], expected["overwrite"]
    assert written == expected
    # The run folder still colorizes as a model: its generator, not its config.json.
    assert load_model(out)[1].arch == "unet"
    before_checkpoint = tmp_path / "started"
    before_checkpoint.mkdir()
    shutil.copy(out / "config.json", before_checkpoint)
    with pytest.raises(CheckpointError, match="a training run that has saved no generator"):
        load_model(before_checkpoint)

    written["lr"] = 0.5
    (out / "config.json").write_text(json.dumps(written))
    with caplog.at_level("WARNING", logger="celpaint"):
        train(tiny_config(pairs, out, resume=True, epochs=2), explicit={"resume", "epochs"})
    assert "config.json differs from the run's saved state in lr" in caplog.text
    assert json.loads((out / "config.json").read_text())["lr"] == 2e-4


def test_corrupt_train_state_is_reported(pairs, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(pairs, out, epochs=1))
    (out / STATE_NAME).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        train(tiny_config(pairs, out, resume=True), explicit={"resume"})


def test_init_takes_the_architecture_and_weights(pairs, tmp_path):
    source = tmp_path / "source"
    train(tiny_config(pairs, source, epochs=1))
    seen = {}

    class Capture(Recorder):
        def start(self, info):
            super().start(info)
            seen["parameters"] = info.generator_parameters

    out = tmp_path / "tuned"
    # The source run's depth (3) wins over the default; its weights are the starting point.
    train(tiny_config(pairs, out, epochs=1, depth=7, init=str(source)), Capture(),
          explicit={"init"})  # fmt: skip
    _, config = load_model(out / "generator")
    assert config.arch_args == load_model(source / "generator")[1].arch_args
    assert seen["parameters"] == sum(p.numel() for p in load_model(source / "generator")[0]
                                     .parameters())  # fmt: skip
    with pytest.raises(InputError, match="fixes the generator's depth"):
        train(tiny_config(pairs, tmp_path / "x", init=str(source), depth=5),
              explicit={"init", "depth"})  # fmt: skip
    gray = make_checkpoint(tmp_path / "gray", "grayscale")
    with pytest.raises(InputError, match="use --model lab"):
        train(tiny_config(pairs, tmp_path / "y", init=str(gray)))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, config: dict, report: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    trainers = []
    original_init = gan.Trainer.__init__

    def keep(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        trainers.append(self)

    gan.Trainer.__init__ = keep  # this process only: it was spawned for the test
    try:
        result = train(TrainConfig(**config), handle_signals=False)
        # Each process's own generator after training, gathered: DDP must have kept them in
        # sync, and they must be what rank 0 saved.
        generator = unwrap(trainers[-1].generator)
        local = torch.cat([p.detach().flatten() for p in generator.parameters()])
        gathered = [torch.zeros_like(local) for _ in range(world_size)]
        torch.distributed.all_gather(gathered, local)
        if rank == 0:
            saved, _ = load_model(Path(config["out"]) / "generator")
            saved_flat = torch.cat([p.detach().flatten() for p in saved.parameters()])
            same = all(torch.equal(saved_flat, g) for g in gathered)
            Path(report).write_text(json.dumps({"same": same, "step": result.step}))
        # Tear the group down together: a process that destroys it while its peer still uses
        # the connection can make gloo abort the peer ("terminate called without an active
        # exception"), which fails the run after the work is done.
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()
    # The work is done and reported. Leave without C++ teardown: gloo's threads have, rarely,
    # aborted a process during interpreter exit, which failed the test after the fact.
    os._exit(0)


def test_two_process_ddp_on_cpu(tmp_path):
    data = tmp_path / "data"
    make_pairs(data, count=8, size=(32, 32))
    out = tmp_path / "run"
    config = tiny_config(data, out, epochs=2, val_fraction=0, device="cpu").to_dict()
    report = tmp_path / "report.json"
    mp.spawn(_ddp_worker, args=(2, _free_port(), config, str(report)), nprocs=2, join=True)
    outcome = json.loads(report.read_text())
    # 8 pairs, 2 per process per step, 2 processes: 2 steps per epoch.
    assert outcome == {"same": True, "step": 4}
    assert load_train_state(out / STATE_NAME)["step"] == 4
    with (out / "losses.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_mixed_precision_run(pairs, tmp_path):
    out = tmp_path / "cuda"
    result = train(tiny_config(pairs, out, device="cuda", epochs=2))
    assert result.step == 4
    trainer_state = load_train_state(out / STATE_NAME)
    # Mixed precision is on by default on CUDA: the gradient scalers have state to resume.
    assert trainer_state["scaler_g"] and trainer_state["scaler_d"]
    assert all(torch.isfinite(v).all() for v in _weights(out / "generator").values())
