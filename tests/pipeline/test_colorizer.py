import numpy as np
import pytest
import torch

from celpaint.errors import CheckpointError, InputError, ProcessingError
from celpaint.models import load_model
from celpaint.pipeline.colorizer import Colorizer, WorkGeometry, resolve_device, resolve_precision


def _frames(count=3, height=142, width=250, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def _lab(frames):
    import cv2

    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2LAB) for f in frames]).astype(int)


def test_geometry_scales_down_never_up_and_pads_to_the_multiple():
    small = WorkGeometry.fit(142, 250, work_size=512, multiple=16)
    assert (small.work_height, small.work_width) == (142, 250) and not small.scaled
    assert (small.padded_height, small.padded_width) == (144, 256)
    big = WorkGeometry.fit(1080, 1920, work_size=512, multiple=64)
    assert (big.work_height, big.work_width) == (288, 512) and big.scaled
    assert (big.padded_height, big.padded_width) == (320, 512)


@pytest.mark.parametrize("kind", ["lineart", "gray"])
def test_output_has_the_input_shape_at_any_size(kind, lineart_model, gray_model):
    colorizer = Colorizer.from_pretrained(lineart_model if kind == "lineart" else gray_model)
    for height, width in [(142, 250), (37, 53), (300, 90)]:
        out = colorizer.colorize(_frames(2, height, width))
        assert out.shape == (2, height, width, 3) and out.dtype == np.uint8


def test_grayscale_model_keeps_the_input_luminance(gray_model):
    colorizer = Colorizer.from_pretrained(gray_model, work_size=64)  # scaled down for the net
    frames = _frames(2, 142, 250)
    out = colorizer.colorize(frames)
    # 8-bit rounding of RGB moves L* by about one unit at most.
    assert np.abs(_lab(out)[..., 0] - _lab(frames)[..., 0]).mean() < 1.0
    assert np.any(out != frames)


def test_batching_does_not_change_results(lineart_model):
    frames = _frames(5)
    one = Colorizer.from_pretrained(lineart_model, batch_size=1).colorize(frames)
    many = Colorizer.from_pretrained(lineart_model, batch_size=8).colorize(frames)
    assert np.abs(one.astype(int) - many).max() <= 1


def test_out_of_memory_halves_the_batch_and_keeps_every_frame(lineart_model, monkeypatch):
    reference = Colorizer.from_pretrained(lineart_model, batch_size=1).colorize(_frames(8))
    colorizer = Colorizer.from_pretrained(lineart_model, batch_size=8)
    real_forward = colorizer._forward
    seen = []

    def forward_with_fake_oom(source):
        seen.append(len(source))
        if len(source) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return real_forward(source)

    monkeypatch.setattr(colorizer, "_forward", forward_with_fake_oom)
    out = colorizer.colorize(_frames(8))
    assert seen == [8, 4, 2, 2, 2, 2] and colorizer.batch_size == 2
    assert np.abs(out.astype(int) - reference).max() <= 1

    monkeypatch.setattr(
        colorizer, "_forward", lambda s: (_ for _ in ()).throw(RuntimeError("out of memory"))
    )
    with pytest.raises(ProcessingError, match="even for one frame"):
        colorizer.colorize(_frames(3))


def test_device_and_precision_checks():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(InputError):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA"):
            resolve_device("cuda:0")
    assert resolve_precision("auto", torch.device("cpu")) == torch.float32
    with pytest.raises(InputError, match="needs a GPU"):
        resolve_precision("fp16", torch.device("cpu"))


def test_bad_checkpoints(tmp_path, lineart_model):
    with pytest.raises(CheckpointError, match="neither a shipped model"):
        Colorizer.from_pretrained(tmp_path / "nowhere")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text((lineart_model / "config.json").read_text())
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(corrupt)
    incompatible = tmp_path / "incompatible"
    incompatible.mkdir()
    config = (lineart_model / "config.json").read_text().replace('"depth": 4', '"depth": 5')
    (incompatible / "config.json").write_text(config)
    (incompatible / "model.safetensors").write_bytes(
        (lineart_model / "model.safetensors").read_bytes()
    )
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(incompatible)
    future = tmp_path / "future"
    future.mkdir()
    (future / "config.json").write_text('{"format_version": 99}')
    with pytest.raises(CheckpointError, match="format version 99"):
        load_model(future)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_half_precision_matches_cpu(lineart_model):
    frames = _frames(4)
    cpu = Colorizer.from_pretrained(lineart_model, device="cpu").colorize(frames)
    gpu = Colorizer.from_pretrained(lineart_model, device="cuda", precision="fp16")
    assert gpu.dtype == torch.float16
    assert np.abs(gpu.colorize(frames).astype(int) - cpu).mean() < 2
