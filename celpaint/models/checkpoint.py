"""The checkpoint directory: ``config.json`` beside ``model.safetensors``.

Loading rebuilds the network from the config through the registry and reads the weights with
safetensors, so no pickled code is executed and no flags are needed.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from celpaint.color.task import Task, task_for
from celpaint.errors import CheckpointError
from celpaint.models import registry

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

InputKind = Literal["lineart", "grayscale"]
OutputKind = Literal["rgb", "ab"]


@dataclass
class ModelConfig:
    """Everything needed to rebuild a generator and feed it correctly.

    Attributes:
        arch: registry name of the network.
        arch_args: the network's constructor arguments.
        input_kind: ``"lineart"`` (dark lines on white, 1 channel) or ``"grayscale"`` (L*).
        output: ``"rgb"`` (3 channels) or ``"ab"`` (a*b*, the input's L* is kept).
        size_multiple: height and width fed to the network must be multiples of this.
        work_size: long side of the frames the network sees; larger inputs are scaled down.
        trained_on: free text describing the training data.
        chroma_scale: the predicted a*b* are multiplied by this before use, 0..2; set by
            ``scripts/export_model.py`` from held-out data (docs/models.md says how).
        normalisation: how pixels map to network ranges (see ``celpaint.color.task``).
        task: the model variant (``celpaint.color.task``), derived from ``input_kind`` and
            ``output``; saved by name as ``"task"``.
    """

    arch: str
    arch_args: dict[str, Any]
    input_kind: InputKind
    output: OutputKind
    size_multiple: int
    work_size: int = 512
    trained_on: str = ""
    chroma_scale: float = 1.0
    normalisation: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    celpaint_version: str = ""
    task: Task = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            self.task = task_for(self.input_kind, self.output)
        except ValueError as error:
            raise CheckpointError(f"{error} in model config") from None
        if not 0 <= self.chroma_scale <= 2:
            raise CheckpointError(
                f"chroma_scale {self.chroma_scale!r} in model config is outside [0, 2]"
            )
        if not self.normalisation:
            self.normalisation = self.task.normalisation
        if not self.celpaint_version:
            self.celpaint_version = celpaint_version()

    def to_dict(self) -> dict[str, Any]:
        """The ``config.json`` fields (the task by name)."""
        data = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.init}
        return {**data, "task": self.task.name}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> ModelConfig:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{source} has checkpoint format version {version!r}; this celpaint reads "
                f"version {FORMAT_VERSION}. Upgrade celpaint or re-export the model."
            )
        known = {f.name for f in fields(cls) if f.init}
        missing = {"arch", "arch_args", "input_kind", "output", "size_multiple"} - set(data)
        if missing:
            raise CheckpointError(f"{source} lacks {', '.join(sorted(missing))}")
        # Fields added since format version 1 ("task") are optional: older files lack them.
        config = cls(**{k: v for k, v in data.items() if k in known})
        if data.get("task", config.task.name) != config.task.name:
            raise CheckpointError(
                f"{source} says task {data['task']!r} but maps {config.input_kind} to "
                f"{config.output}, which is task {config.task.name!r}; fix or re-export it"
            )
        return config


def celpaint_version() -> str:
    """celpaint's version as installed (the package metadata; ``celpaint.__version__`` is its
    source), or ``"unknown"`` when run from a tree that was never installed."""
    try:
        return importlib.metadata.version("celpaint")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DistributedDataParallel and torch.compile wrap modules and prefix every key.
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel and/or ``torch.compile`` wrapper."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_model(
    model: nn.Module,
    directory: str | os.PathLike,
    config: ModelConfig | dict[str, Any],
    half: bool = False,
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory`` atomically.

    The files are written to a temporary directory beside the target, which then replaces the
    target in one rename, so a crash while saving leaves the previous checkpoint intact.

    Args:
        model: the network (a DDP or compiled wrapper is unwrapped).
        directory: the checkpoint directory to create or replace.
        config: its config (``arch_args`` must rebuild ``model``).
        half: store floating point weights as float16 (they load back as float32).
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Unwrapped, the keys carry no wrapper prefix (``_strip_prefix`` is for loading others').
    state = unwrap(model).state_dict()
    tensors = {}
    for name, tensor in state.items():
        tensor = tensor.detach().cpu()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        tensors[name] = tensor.contiguous()
    config_dict = config.to_dict() if isinstance(config, ModelConfig) else dict(config)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        # mkdtemp makes the directory private (0700), but a checkpoint (a shipped one above
        # all) must be readable by everyone who can read its parent. Fixed modes rather than
        # the umask's: reading the umask means setting it, which races with other threads.
        staging.chmod(0o755)
        save_file(tensors, str(staging / WEIGHTS_NAME), metadata={"format": "pt"})
        (staging / CONFIG_NAME).write_text(json.dumps(config_dict, indent=2) + "\n")
        # safetensors creates its file private too.
        for path in staging.iterdir():
            path.chmod(0o644)
        _replace_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _replace_directory(new: Path, target: Path) -> None:
    if not target.exists():
        os.replace(new, target)
        return
    # Directories cannot be swapped in one rename when the target exists: move the old one
    # aside first, so that at every instant one complete checkpoint is on disk.
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def read_config(directory: str | os.PathLike) -> ModelConfig:
    """Read and validate ``config.json`` of a checkpoint directory."""
    path = Path(directory)
    if not path.exists():
        raise CheckpointError(f"model directory {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(
            f"{path} is not a model directory; pass a directory holding config.json and "
            f"{WEIGHTS_NAME}, or the name of a shipped model"
        )
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise CheckpointError(f"{path} has no {CONFIG_NAME}; is it a celpaint model directory?")
    try:
        data = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{config_path} is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{config_path} must hold a JSON object")
    return ModelConfig.from_dict(data, source=str(config_path))


def load_model(
    directory: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelConfig]:
    """Rebuild the network of a checkpoint directory and load its weights (in eval mode).

    Returns:
        ``(model, config)``; the model holds float32 weights on ``device``.
    """
    path = Path(directory)
    config = read_config(path)
    try:
        model = registry.build(config.arch, **config.arch_args)
    except KeyError as error:
        raise CheckpointError(f"{path}: {error.args[0]}; upgrade celpaint?") from None
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: config.json has bad arch_args ({error})") from None
    weights_path = path / WEIGHTS_NAME
    if not weights_path.is_file():
        raise CheckpointError(f"{path} has no {WEIGHTS_NAME}")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{weights_path} is corrupt or not a safetensors file ({error})"
        ) from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(_strip_prefix(state), strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise CheckpointError(
            f"{weights_path} does not match the architecture in config.json ({detail})"
        ) from None
    return model.to(device).eval(), config
