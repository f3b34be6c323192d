import numpy as np
import pytest
import torch

from celpaint.device import resolve_precision
from celpaint.errors import CheckpointError, InputError, ProcessingError
from celpaint.models.checkpoint import load_model
from celpaint.ops.geometry import WorkGeometry
from celpaint.pipeline.colorizer import ColorizeOptions, Colorizer, choose_device


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
    assert choose_device("cpu", "auto") == (torch.device("cpu"), torch.float32)
    with pytest.raises(InputError):
        choose_device("toaster", "auto")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA"):
            choose_device("cuda:0", "auto")
    assert resolve_precision("auto", torch.device("cpu")) == torch.float32
    with pytest.raises(InputError, match="needs a GPU"):
        choose_device("cpu", "fp16")
    # Below the pipeline the same checks are ValueErrors (celpaint.device raises no InputError).
    with pytest.raises(ValueError, match="needs a GPU"):
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


def _line_art_clip(count=4, scale=3):
    """RGB line art ``(count, 48*scale, 80*scale, 3)``: a frame, a moving box and a circle,
    lines ``scale`` px wide."""
    import cv2

    height, width = 48 * scale, 80 * scale
    frames = []
    for t in range(count):
        lines = np.full((height, width), 255, np.uint8)
        cv2.rectangle(lines, (2, 2), (width - 3, height - 3), 0, scale)
        x = (10 + 2 * t) * scale
        cv2.rectangle(lines, (x, 10 * scale), (x + 20 * scale, 30 * scale), 0, scale)
        cv2.circle(lines, (60 * scale, 24 * scale), 10 * scale, 0, scale)
        frames.append(np.repeat(lines[..., None], 3, axis=2))
    return np.stack(frames)


def test_large_frames_are_colored_at_full_size_with_crisp_lines(lineart_model):
    from celpaint.color.array import lightness, rgb_to_lab
    from celpaint.ops.temporal import TemporalParams

    frames = _line_art_clip(scale=4)  # 192x320, the network sees 48x80
    colorizer = Colorizer.from_pretrained(lineart_model, work_size=80)
    assert colorizer.geometry(192, 320).scaled
    out = colorizer.stream(ColorizeOptions(temporal=TemporalParams()))(frames)
    assert out.shape == frames.shape and out.dtype == np.uint8
    on_lines = frames[..., 0] < 64
    for frame, colored in zip(frames, out, strict=True):
        # Every line pixel at least as dark as drawn, up to 8-bit rounding.
        drawn = lightness(frame)[on_lines[0]]
        assert (rgb_to_lab(colored)[..., 0][on_lines[0]] <= drawn + 1.0).all()
    assert out[on_lines].max() < 40
    # Frames within the work size are not resampled: the same frames at 48x80.
    small = np.ascontiguousarray(frames[:, ::4, ::4])
    assert colorizer.colorize(small).shape == small.shape


def test_grayscale_model_keeps_the_input_luminance_with_smoothing(gray_model):
    from celpaint.color.array import lightness, rgb_to_lab
    from celpaint.ops.temporal import TemporalParams

    colorizer = Colorizer.from_pretrained(gray_model, work_size=64)  # scaled down for the net
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (4, 142, 250), dtype=np.uint8)
    frames = np.repeat(gray[..., None], 3, axis=3)
    out = colorizer.stream(ColorizeOptions(temporal=TemporalParams()))(frames)
    assert np.any(out != frames)
    for frame, colored in zip(frames, out, strict=True):
        # Out-of-gamut chroma is reduced at constant L*: only 8-bit rounding is left.
        error = np.abs(rgb_to_lab(colored)[..., 0] - lightness(frame))
        assert error.max() < 1.5 and error.mean() < 0.3


def test_flat_fill_gives_one_color_per_closed_region(lineart_model):
    from skimage.measure import label

    frames = _line_art_clip(count=2)
    colorizer = Colorizer.from_pretrained(lineart_model)
    plain = colorizer.colorize(frames)
    filled = colorizer.stream(ColorizeOptions(temporal=None, flat_fill=True))(frames)
    for frame, colored, noisy in zip(frames, filled, plain, strict=True):
        regions = label(frame[..., 0] >= 128, connectivity=1)
        assert regions.max() >= 4
        for region in range(1, regions.max() + 1):
            assert len(np.unique(colored[regions == region], axis=0)) == 1
            # The random tiny network paints no region flat on its own.
            assert len(np.unique(noisy[regions == region], axis=0)) > 1
        # Line pixels are not flattened.
        assert np.array_equal(colored[regions == 0], noisy[regions == 0])


def test_colorizer_rejects_a_work_size_below_the_size_multiple(lineart_model):
    with pytest.raises(InputError, match="size multiple"):
        Colorizer.from_pretrained(lineart_model, work_size=8)


@pytest.mark.parametrize("kind", ["lineart", "gray"])
def test_chroma_scale_mutes_the_predicted_colors(kind, lineart_model, gray_model):
    model = lineart_model if kind == "lineart" else gray_model
    gray = np.repeat(_frames(2, 64, 96)[..., :1], 3, axis=3)
    chroma = {}
    for scale in (1.0, 0.5, 0.0):
        colorizer = Colorizer.from_pretrained(model, device="cpu")
        colorizer.config.chroma_scale = scale
        lab = _lab(colorizer.colorize(gray)) - [0, 128, 128]  # OpenCV stores a*, b* + 128
        chroma[scale] = np.hypot(lab[..., 1], lab[..., 2]).mean()
    # A tiny random network colors strongly; the scale divides that, down to gray.
    assert chroma[1.0] > 5
    assert chroma[0.5] == pytest.approx(chroma[1.0] / 2, rel=0.2)
    assert chroma[0.0] < 1.5
