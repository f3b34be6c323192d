"""The generator's backend: the rule behind ``auto``, and ONNX Runtime against PyTorch."""

import sys

import numpy as np
import pytest
import torch

from celpaint.device import usable_cores
from celpaint.errors import InputError
from celpaint.models import onnx as onnx_models
from celpaint.models.registry import build
from celpaint.models.unet import UNetGenerator
from celpaint.pipeline.colorizer import Colorizer, choose_backend, generator_workers
from celpaint.pipeline.reference import adapt
from tests.conftest import make_checkpoint, tiny_unet_args

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


UNET = build("unet", **tiny_unet_args(3))
PATCHGAN = build("patchgan", in_channels=4, base_channels=4, n_layers=2)


def test_auto_keeps_torch_for_networks_not_measured_faster():
    assert onnx_models.FASTER_ON_CPU == ()  # see docs/design.md: not faster end to end here
    assert choose_backend("auto", CPU, torch.float32, False, UNET) == "torch"


def test_auto_picks_onnxruntime_only_where_it_was_measured_faster(monkeypatch):
    monkeypatch.setattr(onnx_models, "FASTER_ON_CPU", (UNetGenerator,))
    assert choose_backend("auto", CPU, torch.float32, False, UNET) == "onnxruntime"
    assert choose_backend("auto", CUDA, torch.float16, False, UNET) == "torch"
    assert choose_backend("auto", CUDA, torch.float32, False, UNET) == "torch"
    assert choose_backend("auto", CPU, torch.bfloat16, False, UNET) == "torch"
    assert choose_backend("auto", CPU, torch.float32, True, UNET) == "torch"
    assert choose_backend("auto", CPU, torch.float32, False, PATCHGAN) == "torch"
    assert choose_backend("torch", CPU, torch.float32, False, UNET) == "torch"


def test_auto_falls_back_to_torch_without_the_extra(monkeypatch):
    monkeypatch.setattr(onnx_models, "FASTER_ON_CPU", (UNetGenerator,))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert choose_backend("auto", CPU, torch.float32, False, UNET) == "torch"
    with pytest.raises(InputError, match=r'pip install "celpaint\[onnx\]"'):
        choose_backend("onnxruntime", CPU, torch.float32, False, UNET)


def test_onnxruntime_where_it_cannot_run_is_refused():
    for device, dtype, compiled in [(CUDA, torch.float16, False), (CPU, torch.bfloat16, False),
                                    (CPU, torch.float32, True)]:  # fmt: skip
        with pytest.raises(InputError, match="--backend onnxruntime runs in fp32 on the CPU"):
            choose_backend("onnxruntime", device, dtype, compiled, UNET)
    with pytest.raises(InputError, match="--backend 'tensorrt' is unknown"):
        choose_backend("tensorrt", CPU, torch.float32, False, UNET)


def _frames(count: int = 3) -> np.ndarray:
    rng = np.random.default_rng(1)
    frames = np.full((count, 50, 70, 3), 255, np.uint8)
    for index in range(count):
        frames[index, 10 + index : 14 + index, 5:60] = 0  # a line
        frames[index, 25:45, 30:50] = rng.integers(0, 255, 3, dtype=np.uint8)
    return frames


@pytest.mark.parametrize("kind", ["lineart", "grayscale"])
def test_onnxruntime_colors_like_torch(tmp_path, kind):
    checkpoint = make_checkpoint(tmp_path / kind, kind, work_size=64)
    frames = _frames()
    torch_colorizer = Colorizer.from_pretrained(checkpoint, device="cpu", backend="torch")
    ort_colorizer = Colorizer.from_pretrained(checkpoint, device="cpu", backend="onnxruntime")
    assert (torch_colorizer.backend, ort_colorizer.backend) == ("torch", "onnxruntime")
    assert torch_colorizer.session is None and ort_colorizer.session is not None
    # The same batching: batch size 2 splits the three frames into two forward passes.
    ort_colorizer.batch_size = torch_colorizer.batch_size = 2
    expected, got = torch_colorizer.colorize(frames), ort_colorizer.colorize(frames)
    assert got.shape == expected.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_session_threads_follow_the_engine_arrangement(tmp_path):
    colorizer = Colorizer.from_pretrained(make_checkpoint(tmp_path / "m"), backend="onnxruntime")
    _, threads = generator_workers(colorizer)
    options = colorizer.session.get_session_options()
    assert options.intra_op_num_threads == (threads or usable_cores())
    assert options.inter_op_num_threads == 1


def test_missing_extra_is_an_input_error(tmp_path, monkeypatch):
    checkpoint = make_checkpoint(tmp_path / "m")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(InputError, match=r'pip install "celpaint\[onnx\]"'):
        Colorizer.from_pretrained(checkpoint, backend="onnxruntime")
    assert Colorizer.from_pretrained(checkpoint).backend == "torch"  # auto without the extra


def test_adapted_weights_reach_the_onnxruntime_session(tmp_path, onnx_cache):
    checkpoint = make_checkpoint(tmp_path / "m")
    colorizer = Colorizer.from_pretrained(checkpoint, backend="onnxruntime")
    reference = Colorizer.from_pretrained(checkpoint, backend="torch")
    frame = _frames(1)[0]
    key = np.zeros_like(frame)
    key[..., 0] = 200
    cached = sorted(onnx_cache.rglob("*.onnx"))
    for each in (colorizer, reference):
        torch.manual_seed(0)
        adapt(each, [(frame, key)], steps=2, seed=0)
    before = Colorizer.from_pretrained(checkpoint, backend="torch").colorize(frame[None])
    got, expected = colorizer.colorize(frame[None]), reference.colorize(frame[None])
    assert not np.array_equal(expected, before)  # the weights did change
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert sorted(onnx_cache.rglob("*.onnx")) == cached  # one-off weights are not cached
