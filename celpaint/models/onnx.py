"""ONNX export of a generator and ONNX Runtime sessions over it, with an on-disk cache.

The exported graph takes the network input ``(B, in_channels, H, W)`` float32 (as
``Task.to_network`` makes it, padded to the size multiple) and returns the network output
``(B, out_channels, H, W)`` float32; batch, height and width are dynamic. The model's config,
task, normalisation, celpaint version and weights' digest are in the file's
``metadata_props`` (keys ``METADATA_KEYS``). Why the TorchScript exporter:
docs/design.md#onnx-export-and-the-onnx-runtime-backend.

ONNX Runtime and the ``onnx`` package are the optional extra ``celpaint[onnx]``; they are
imported here only when used, and their absence is an ``InputError`` saying how to install it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from celpaint.errors import InputError, ProcessingError
from celpaint.models import zoo
from celpaint.models.checkpoint import ModelConfig, celpaint_version, load_model

log = logging.getLogger("celpaint.models.onnx")

INPUT_NAME = "input"
OUTPUT_NAME = "output"
OPSET = 17
# What else decides the bytes of an export: part of the cache key, and of the metadata.
EXPORTER = f"torch.onnx TorchScript exporter, opset {OPSET}"
# Largest |ONNX Runtime - PyTorch| allowed on the network's output (range [-1, 1]).
PARITY_TOLERANCE = 1e-4
# Networks that ONNX Runtime runs faster than PyTorch end to end on the CPU, so that ``auto``
# picks it there. None yet: on the 2-core machine it did not beat PyTorch end to end; add
# ``unet.UNetGenerator`` if an idle rerun of benchmarks/bench_onnx.py shows it
# (docs/design.md#onnx-export-and-the-onnx-runtime-backend).
FASTER_ON_CPU: tuple[type[nn.Module], ...] = ()
INSTALL_HINT = 'pip install "celpaint[onnx]"'
METADATA_KEYS = (
    "celpaint.config",
    "celpaint.task",
    "celpaint.normalisation",
    "celpaint.version",
    "celpaint.weights_sha256",
    "celpaint.exporter",
)


def require_onnxruntime():
    """The ``onnxruntime`` module.

    Raises:
        InputError: it is not installed; the message says how to install it.
    """
    try:
        import onnxruntime
    except ImportError:
        raise InputError(
            f"the onnxruntime backend needs ONNX Runtime: {INSTALL_HINT} (or use --backend torch)"
        ) from None
    return onnxruntime


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise InputError(f"exporting to ONNX needs the onnx package: {INSTALL_HINT}") from None
    return onnx


def onnxruntime_installed() -> bool:
    """Whether the ``celpaint[onnx]`` extra (ONNX Runtime and onnx) can be imported."""
    try:
        require_onnxruntime()
        _require_onnx()
    except InputError:
        return False
    return True


def weights_sha256(model: nn.Module) -> str:
    """Hex sha256 of the network's float32 state dict (names, shapes and bytes, in name order):
    the same for a checkpoint stored in float16 or float32, different after any change of a
    weight or buffer."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu()
        value = value.float() if value.is_floating_point() else value
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.contiguous().numpy().tobytes())
    return digest.hexdigest()


def metadata(model: nn.Module, config: ModelConfig, digest: str | None = None) -> dict[str, str]:
    """The ``metadata_props`` of an export: ``METADATA_KEYS`` -> text (JSON for the config and
    the normalisation)."""
    return {
        "celpaint.config": json.dumps(config.to_dict(), sort_keys=True),
        "celpaint.task": config.task.name,
        "celpaint.normalisation": json.dumps(config.normalisation, sort_keys=True),
        "celpaint.version": celpaint_version(),
        "celpaint.weights_sha256": digest or weights_sha256(model),
        "celpaint.exporter": f"{EXPORTER}, torch {torch.__version__}",
    }


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict.

    Raises:
        ProcessingError: not a readable ONNX file.
    """
    onnx = _require_onnx()
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:
        raise ProcessingError(f"{path} is not a readable ONNX file ({error})") from None
    return {entry.key: entry.value for entry in proto.metadata_props}


@dataclass(frozen=True)
class ExportReport:
    """What ``export`` checked: the largest |ONNX Runtime - PyTorch| on each parity input
    (``(batch, channels, height, width)`` -> max abs difference)."""

    path: Path
    parity: dict[tuple[int, ...], float]

    @property
    def max_difference(self) -> float:
        return max(self.parity.values())


def parity_shapes(config: ModelConfig) -> list[tuple[int, int, int, int]]:
    """Two input shapes of different batch, height and width (multiples of the model's size
    multiple) on which an export is checked against PyTorch."""
    multiple, channels = config.size_multiple, config.task.in_channels
    return [(2, channels, multiple, 2 * multiple), (1, channels, 2 * multiple, multiple)]


def export(
    model: nn.Module,
    config: ModelConfig,
    path: str | os.PathLike,
    digest: str | None = None,
    seed: int = 0,
) -> ExportReport:
    """Export ``model`` to ONNX at ``path`` (atomically: the file appears only once complete
    and checked).

    The graph is traced at one size with dynamic batch, height and width; then ONNX Runtime
    runs it on random inputs in ``[-1, 1]`` at two other shapes (``parity_shapes``) and each
    output must be within ``PARITY_TOLERANCE`` of PyTorch's, in float32 on the CPU.

    Args:
        model: the generator (float32; evaluated in eval mode; not modified).
        config: its ``ModelConfig``, saved in the metadata.
        path: the ``.onnx`` file to write (its folder is created).
        digest: ``weights_sha256(model)`` when the caller has it already.
        seed: of the random parity inputs.

    Raises:
        InputError: the ``celpaint[onnx]`` extra is missing.
        ProcessingError: the exporter failed or the parity check did not hold (nothing is
            written), or the file could not be written.
    """
    data, parity = export_bytes(model, config, digest, seed)
    _write_atomically(Path(path), data)
    return ExportReport(Path(path), parity)


def export_bytes(
    model: nn.Module, config: ModelConfig, digest: str | None = None, seed: int = 0
) -> tuple[bytes, dict[tuple[int, ...], float]]:
    """``export`` in memory: the ONNX file's bytes and the parity check's differences.

    Raises:
        InputError, ProcessingError: as for ``export``.
    """
    onnxruntime = require_onnxruntime()
    onnx = _require_onnx()
    model = model.eval()
    data = _trace(model, config)
    proto = onnx.load_from_string(data)
    for key, value in metadata(model, config, digest).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    data = proto.SerializeToString()
    session = onnxruntime.InferenceSession(data, _session_options(onnxruntime, None),
                                           providers=["CPUExecutionProvider"])  # fmt: skip
    parity = _parity(model, session, config, seed)
    worst = max(parity.values())
    if not worst <= PARITY_TOLERANCE:
        raise ProcessingError(
            f"the ONNX export of {config.arch} differs from PyTorch by up to {worst:.3g} "
            f"(allowed {PARITY_TOLERANCE:g}); nothing was written. Report it with the model's "
            "config.json, and use --backend torch meanwhile"
        )
    return data, parity


def export_model(
    name_or_path: str | os.PathLike, path: str | os.PathLike, overwrite: bool = False
) -> ExportReport:
    """Export a shipped model (by name) or a checkpoint or training run directory to ``path``
    (``export``).

    Raises:
        InputError: an unknown model, a corrupt checkpoint, ``path`` is a folder or exists
            without ``overwrite``, or the ``celpaint[onnx]`` extra is missing.
        ProcessingError: as for ``export``.
    """
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{target} is a folder; give the .onnx file to write, e.g. -o model.onnx")
    if target.exists() and not overwrite:
        raise InputError(f"{target} exists; pass --overwrite to replace it")
    require_onnxruntime()
    _require_onnx()
    model, config = load_model(zoo.generator_directory(name_or_path))
    return export(model, config, target)


def _trace(model: nn.Module, config: ModelConfig) -> bytes:
    multiple = config.size_multiple
    example = torch.zeros(1, config.task.in_channels, multiple, multiple)
    axes = {0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    try:
        # The exporter warns that it is deprecated, and the tracer that the size check in
        # forward() is a Python bool (true at the traced size, dropped from the graph): both
        # are expected here, and the library does not pass warnings to the user's console.
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example,), buffer, dynamo=False, opset_version=OPSET,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes}, do_constant_folding=True,
            )  # fmt: skip
    except Exception as error:
        raise ProcessingError(
            f"exporting {config.arch} to ONNX failed ({type(error).__name__}: {error}); use "
            "--backend torch"
        ) from None
    return buffer.getvalue()


def _parity(model: nn.Module, session, config: ModelConfig, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    parity = {}
    for shape in parity_shapes(config):
        source = torch.rand(shape, generator=generator) * 2 - 1
        with torch.no_grad():
            expected = model(source).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: source.numpy()})[0]
        if got.shape != expected.shape:
            parity[shape] = float("inf")
        else:
            parity[shape] = float(np.abs(got - expected).max())
    return parity


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            # mkstemp creates the file private; a model file is as readable as the umask says.
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(temp, 0o666 & ~mask)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
    except OSError as error:
        raise ProcessingError(f"cannot write {path}: {error.strerror or error}") from None


def cache_directory() -> Path:
    """Where exported models are cached: ``$CELPAINT_CACHE``, else
    ``$XDG_CACHE_HOME/celpaint``, else ``~/.cache/celpaint``."""
    if os.environ.get("CELPAINT_CACHE"):
        return Path(os.environ["CELPAINT_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "celpaint"
    return Path.home() / ".cache" / "celpaint"


def cache_key(config: ModelConfig, digest: str) -> str:
    """The cache key of a model: its architecture, its weights' digest, celpaint's version
    and the exporter's settings."""
    architecture = json.dumps([config.arch, config.arch_args], sort_keys=True)
    text = f"{architecture}|{digest}|{celpaint_version()}|{EXPORTER}|torch {torch.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cached_path(config: ModelConfig, digest: str) -> Path:
    """The cache file of a model whose weights have ``digest`` (``weights_sha256``)."""
    name = f"{config.arch}-{config.task.name}-{cache_key(config, digest)}.onnx"
    return cache_directory() / "onnx" / name


def open_session(model: nn.Module, config: ModelConfig, threads: int | None, cache: bool = True):
    """An ONNX Runtime session (CPU, float32) running ``model``, from the cache.

    The model is exported into the cache on first use (``export``, with its parity check); a
    cached file that cannot be loaded, or whose metadata names other weights, is rebuilt with
    a warning.

    Args:
        threads: intra-op threads of each ``run`` (None: ONNX Runtime's default, all cores).
        cache: False exports in memory and writes nothing (weights used once, such as a
            model fine-tuned on a shot's keyframes).

    A cache that cannot be written costs a warning and the export on every use.

    Raises:
        InputError: the ``celpaint[onnx]`` extra is missing.
        ProcessingError: the export failed its parity check.
    """
    onnxruntime = require_onnxruntime()
    digest = weights_sha256(model)
    options = _session_options(onnxruntime, threads)
    if not cache:
        data, _ = export_bytes(model, config, digest)
        return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    path = cached_path(config, digest)
    if path.is_file():
        try:
            session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
            stored = session.get_modelmeta().custom_metadata_map.get("celpaint.weights_sha256")
            if stored == digest:
                return session
            problem = "it holds other weights"
        except Exception as error:  # ONNX Runtime reports a bad file with its own classes
            problem = " ".join(str(error).split())[:200]
        log.warning("the cached ONNX model %s is unusable (%s): exporting it again", path, problem)
    data, _ = export_bytes(model, config, digest)
    try:
        _write_atomically(path, data)
    except ProcessingError as error:
        # A read-only home costs the export on every run, not the run.
        log.warning("%s; the model is exported on every run: set CELPAINT_CACHE to a "
                    "writable folder", error)  # fmt: skip
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _session_options(onnxruntime, threads: int | None):
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Errors only: the library does not write to the user's console.
    options.log_severity_level = 3
    return options
