"""`celpaint export` and `colorize --backend` through the real entry point."""

import json
import subprocess
import sys

import numpy as np
import pytest

from celpaint.cli.app import main
from celpaint.io.frames import list_images, read_image
from celpaint.models import onnx as onnx_models
from tests.conftest import make_frames

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TINY_TRAIN = ["--depth", "3", "--base-channels", "4", "--max-channels", "8",
              "--disc-channels", "4", "--crop", "24", "--work-size", "64", "--batch-size", "2",
              "--workers", "0", "--threads", "1", "--samples", "1"]  # fmt: skip


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "celpaint", *map(str, args)], capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def test_export_a_shipped_model(tmp_path):
    out = tmp_path / "lineart.onnx"
    result = run_cli("export", "lineart", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "exported lineart to" in result.stderr
    meta = onnx_models.read_metadata(out)
    assert json.loads(meta["celpaint.config"])["input_kind"] == "lineart"
    assert meta["celpaint.task"] == "pix2pix"
    # An existing file is kept unless --overwrite.
    stamp = out.stat().st_mtime_ns
    again = run_cli("export", "lineart", "-o", out)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert out.stat().st_mtime_ns == stamp


def test_export_a_trained_run(pairs, tmp_path, capfd, one_torch_thread):
    run = tmp_path / "run"
    data = ["--sketch", str(pairs / "sketch"), "--color", str(pairs / "color")]
    code = main(["train", "--model", "pix2pix", "--out", str(run), *data, "--epochs", "1",
                 *TINY_TRAIN])  # fmt: skip
    assert code == 0, capfd.readouterr().err
    out = tmp_path / "mine.onnx"
    assert main(["export", str(run), "-o", str(out)]) == 0, capfd.readouterr().err
    assert "within" in capfd.readouterr().err
    config = json.loads(onnx_models.read_metadata(out)["celpaint.config"])
    assert config["arch_args"]["depth"] == 3


def test_export_bad_model_or_output(tmp_path, capfd):
    assert main(["export", "nope", "-o", str(tmp_path / "m.onnx")]) == 2
    assert "neither a shipped model" in capfd.readouterr().err
    assert main(["export", "lineart", "-o", str(tmp_path)]) == 2
    assert "is a folder" in capfd.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_colorize_backends_give_the_same_frames(tmp_path, lineart_model):
    frames = make_frames(tmp_path / "shots", count=6, size=(64, 48))
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        outputs[backend] = tmp_path / backend
        result = run_cli("colorize", frames, "-o", outputs[backend], "--model", lineart_model,
                         "--backend", backend, "--device", "cpu")  # fmt: skip
        assert result.returncode == 0, result.stderr
    names = [p.name for p in list_images(outputs["torch"])]
    assert names == [p.name for p in list_images(outputs["onnxruntime"])] and len(names) == 6
    for name in names:
        expected = read_image(outputs["torch"] / name).astype(int)
        got = read_image(outputs["onnxruntime"] / name).astype(int)
        assert np.abs(got - expected).max() <= 1, name


def test_backend_without_the_extra_says_how_to_install(tmp_path, monkeypatch, capfd):
    frames = make_frames(tmp_path / "shots", count=2)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    out = tmp_path / "out"
    assert main(["colorize", str(frames), "-o", str(out), "--backend", "onnxruntime"]) == 2
    assert 'pip install "celpaint[onnx]"' in capfd.readouterr().err
    assert not out.exists()
    monkeypatch.setenv("COLUMNS", "300")  # the parser's message on one line
    assert main(["colorize", str(frames), "-o", str(out), "--backend", "gpu"]) == 2
    assert "'gpu' is not one of 'auto', 'torch', 'onnxruntime'" in capfd.readouterr().err


def test_help_names_the_extra(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "300")  # one line per option: nothing wraps
    assert main(["export", "--help"]) == 0
    assert 'pip install "celpaint[onnx]"' in capsys.readouterr().out
    assert main(["colorize", "--help"]) == 0
    assert 'pip install "celpaint[onnx]"' in capsys.readouterr().out
