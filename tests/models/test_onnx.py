"""ONNX export (parity, metadata, dynamic shapes) and the exported-model cache."""

import json
import logging
import os
import sys

import numpy as np
import pytest
import torch
from torch import nn

from celpaint.errors import InputError, ProcessingError
from celpaint.models import onnx as onnx_models
from celpaint.models import zoo
from celpaint.models.checkpoint import load_model, read_config
from tests.conftest import make_checkpoint

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.mark.parametrize("name", ["lineart", "gray"])
def test_shipped_models_export_with_parity_and_metadata(tmp_path, name):
    path = tmp_path / f"{name}.onnx"
    report = onnx_models.export_model(name, path)
    assert report.max_difference <= 1e-4
    assert len(report.parity) == 2
    meta = onnx_models.read_metadata(path)
    assert set(onnx_models.METADATA_KEYS) <= set(meta)
    config = read_config(zoo.generator_directory(name))
    assert json.loads(meta["celpaint.config"]) == config.to_dict()
    assert meta["celpaint.task"] == config.task.name
    assert json.loads(meta["celpaint.normalisation"]) == config.normalisation
    model, _ = load_model(zoo.generator_directory(name))
    assert meta["celpaint.weights_sha256"] == onnx_models.weights_sha256(model)
    assert meta["celpaint.version"]


def test_dynamic_batch_height_and_width(tmp_path):
    checkpoint = make_checkpoint(tmp_path / "tiny", "grayscale")
    model, config = load_model(checkpoint)
    path = tmp_path / "tiny.onnx"
    onnx_models.export(model, config, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (declared,) = session.get_inputs()
    assert [isinstance(d, str) for d in declared.shape] == [True, False, True, True]
    # Traced at 1 x 16 x 16; run at another batch and an unequal height and width.
    source = torch.rand(3, 1, 48, 80) * 2 - 1
    with torch.no_grad():
        expected = model(source).numpy()
    got = session.run(None, {declared.name: source.numpy()})[0]
    assert got.shape == (3, 2, 48, 80)
    assert np.abs(got - expected).max() <= 1e-4


class _WidthScaled(nn.Module):
    """Multiplies by the width as a Python number: traced, the width of the trace is baked
    into the graph, so any other width differs from PyTorch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(x.shape[-1])


def test_failed_parity_is_a_processing_error_and_writes_nothing(tmp_path):
    _, config = load_model(make_checkpoint(tmp_path / "tiny"))
    path = tmp_path / "broken.onnx"
    with pytest.raises(ProcessingError, match="differs from PyTorch"):
        onnx_models.export(_WidthScaled(), config, path)
    assert list(tmp_path.glob("*.onnx")) == [] and list(tmp_path.glob(".broken*")) == []


def test_second_use_reads_the_cache_and_a_corrupt_file_is_rebuilt(tmp_path, caplog):
    model, config = load_model(make_checkpoint(tmp_path / "tiny"))
    session = onnx_models.open_session(model, config, threads=1)
    path = onnx_models.cached_path(config, onnx_models.weights_sha256(model))
    assert path.parent.parent == onnx_models.cache_directory()
    assert path.is_file()
    stamp = path.stat().st_mtime_ns
    os.utime(path, ns=(stamp - 10**9, stamp - 10**9))
    stamp = path.stat().st_mtime_ns
    source = np.random.default_rng(0).uniform(-1, 1, (1, 1, 32, 32)).astype(np.float32)
    expected = session.run(None, {onnx_models.INPUT_NAME: source})[0]

    again = onnx_models.open_session(model, config, threads=1)
    assert path.stat().st_mtime_ns == stamp  # not exported again
    assert np.array_equal(again.run(None, {onnx_models.INPUT_NAME: source})[0], expected)

    path.write_bytes(path.read_bytes()[:1000])  # a truncated file
    with caplog.at_level(logging.WARNING, logger="celpaint"):
        rebuilt = onnx_models.open_session(model, config, threads=1)
    assert "unusable" in caplog.text and "exporting it again" in caplog.text
    assert path.stat().st_mtime_ns != stamp and path.stat().st_size > 1000
    assert np.array_equal(rebuilt.run(None, {onnx_models.INPUT_NAME: source})[0], expected)


def test_an_unwritable_cache_costs_a_warning_not_the_run(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not a folder"
    blocker.write_text("")
    monkeypatch.setenv("CELPAINT_CACHE", str(blocker))
    model, config = load_model(make_checkpoint(tmp_path / "tiny"))
    with caplog.at_level(logging.WARNING, logger="celpaint"):
        session = onnx_models.open_session(model, config, threads=1)
    assert "set CELPAINT_CACHE to a writable folder" in caplog.text
    source = np.zeros((1, 1, 16, 16), np.float32)
    assert session.run(None, {onnx_models.INPUT_NAME: source})[0].shape == (1, 3, 16, 16)


def test_other_weights_get_another_cache_file(tmp_path):
    model, config = load_model(make_checkpoint(tmp_path / "tiny"))
    first = onnx_models.cached_path(config, onnx_models.weights_sha256(model))
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    assert onnx_models.cached_path(config, onnx_models.weights_sha256(model)) != first


def test_cache_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CELPAINT_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert onnx_models.cache_directory() == tmp_path / "mine"
    monkeypatch.delenv("CELPAINT_CACHE")
    assert onnx_models.cache_directory() == tmp_path / "xdg" / "celpaint"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert onnx_models.cache_directory() == tmp_path / "home" / ".cache" / "celpaint"


def test_missing_extra_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    assert not onnx_models.onnxruntime_installed()
    with pytest.raises(InputError, match=r'pip install "celpaint\[onnx\]"'):
        onnx_models.export_model("lineart", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
