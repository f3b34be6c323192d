"""The checkpoint directory: ``config.json`` beside ``model.safetensors``.

Loading rebuilds the network from the config through the registry and reads the weights with
safetensors, so no pickled code is executed and no flags are needed.
"""

from __future__ import annotations

import copy
import errno
import importlib.metadata
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from celpaint.color.task import Task, task_for
from celpaint.errors import CheckpointError
from celpaint.models import registry

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# Names shown in an error about weights that do not fit; the rest are counted.
_NAMES_SHOWN = 3

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
        for name in ("size_multiple", "work_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CheckpointError(
                    f"{name} {value!r} in model config must be a whole number of at least 1; "
                    "fix config.json or re-export the model"
                )
        if not isinstance(self.arch, str) or not isinstance(self.arch_args, dict):
            raise CheckpointError(
                "arch must be a name and arch_args an object in model config; fix config.json "
                "or re-export the model"
            )
        scale = self.chroma_scale
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 <= scale <= 2:
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
        if version is None and "arch" not in data:
            # A training run's own config.json (its options) before its first checkpoint.
            raise CheckpointError(
                f"{source} is not a model's config: a training run that has saved no "
                "generator yet? Resume or finish the run first."
            )
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


def _strip_prefix(state: dict[str, Any]) -> dict[str, Any]:
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

    The files are written to a temporary directory beside the target (``.NAME.tmp-PID-*``),
    which then takes the target's place (``_replace_directory``), so that at every instant a
    complete checkpoint is on disk: the new one, the previous one, or the previous one moved
    aside as ``.NAME.previous``, which loading falls back to (``checkpoint_directory``).

    Args:
        model: the network (a DDP or compiled wrapper is unwrapped).
        directory: the checkpoint directory to create or replace.
        config: its config (``arch_args`` must rebuild ``model``).
        half: store floating point weights as float16 (they load back as float32).

    Raises:
        OSError: the files could not be written (``errno.ENOSPC`` on a full disk).
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
    # The PID in the name tells a later cleanup whether the process writing it still lives.
    staging = Path(tempfile.mkdtemp(prefix=f"{_staging_prefix(target)}{os.getpid()}-",
                                    dir=target.parent))  # fmt: skip
    try:
        # mkdtemp makes the directory private (0700), but a checkpoint (a shipped one above
        # all) must be readable by everyone who can read its parent. Fixed modes rather than
        # the umask's: reading the umask means setting it, which races with other threads.
        staging.chmod(0o755)
        _save_weights(tensors, staging / WEIGHTS_NAME)
        (staging / CONFIG_NAME).write_text(json.dumps(config_dict, indent=2) + "\n")
        # safetensors creates its file private too.
        for path in staging.iterdir():
            path.chmod(0o644)
        _replace_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _save_weights(tensors: dict[str, torch.Tensor], path: Path) -> None:
    try:
        save_file(tensors, str(path), metadata={"format": "pt"})
    except SafetensorError as error:
        # safetensors reports a failed write as text ("... (os error 28)"); callers need the
        # errno to tell a full disk from a bug.
        match = re.search(r"os error (\d+)", str(error))
        if match is None:
            raise
        code = int(match.group(1))
        raise OSError(code, os.strerror(code), str(path)) from None


def previous_directory(target: str | os.PathLike) -> Path:
    """Where ``save_model`` keeps the checkpoint it replaces while the new one moves in."""
    target = Path(target)
    return target.with_name(f".{target.name}.previous")


def _staging_prefix(target: Path) -> str:
    return f".{target.name}.tmp-"


def _replace_directory(new: Path, target: Path) -> None:
    # Directories cannot be swapped in one rename when the target exists: the old one moves
    # aside first. Every step leaves a complete checkpoint at ``target`` or, between the two
    # renames, at ``previous`` (which ``checkpoint_directory`` falls back to).
    previous = previous_directory(target)
    if target.exists():
        # ``target`` only ever appears complete (by rename), so a ``previous`` beside it is
        # the leftover of an interrupted save.
        if previous.exists():
            shutil.rmtree(previous)
        os.replace(target, previous)
    os.replace(new, target)
    shutil.rmtree(previous, ignore_errors=True)


def recover_directory(target: str | os.PathLike) -> None:
    """Finish or undo what an interrupted ``save_model`` of ``target`` left behind.

    A missing ``target`` whose previous copy survives gets it back; a previous copy beside a
    complete ``target`` and the staging folders of dead processes are removed (those of other
    live processes, which may still be saving, are kept). Call it while no other process, and
    no other thread of this one, saves ``target``.
    """
    target = Path(target)
    previous = previous_directory(target)
    if previous.is_dir():
        if target.exists():
            shutil.rmtree(previous)
        else:
            os.replace(previous, target)
    # ``.NAME.old``: where celpaint 0.1 moved the checkpoint it replaced.
    shutil.rmtree(target.with_name(f".{target.name}.old"), ignore_errors=True)
    prefix = _staging_prefix(target)
    if not target.parent.is_dir():
        return
    for path in target.parent.iterdir():
        if path.name.startswith(prefix) and path.is_dir():
            pid = path.name[len(prefix) :].split("-", 1)[0]
            if not (pid.isdigit() and int(pid) != os.getpid() and _process_alive(int(pid))):
                shutil.rmtree(path, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, but belongs to someone else
        return True
    except OSError as error:
        return error.errno != errno.ESRCH
    return True


def checkpoint_directory(directory: str | os.PathLike) -> Path:
    """The directory that holds the checkpoint ``directory`` names.

    That is ``directory`` itself, its ``generator/`` when it is a training run (which keeps its
    discriminator beside it), and for either of them the previous checkpoint that an
    interrupted save left as ``.NAME.previous`` when the new one had not taken its place.
    Anything else is returned unchanged, for the loader to report.
    """
    path = Path(directory)
    if path.is_dir():
        # First: a run folder has a config.json of its own (the run's options).
        for candidate in (path / "generator", previous_directory(path / "generator")):
            if (candidate / CONFIG_NAME).is_file():
                return candidate
    if (path / CONFIG_NAME).is_file():
        return path
    previous = previous_directory(path)
    if not path.exists() and (previous / CONFIG_NAME).is_file():
        return previous
    return path


def read_config(directory: str | os.PathLike) -> ModelConfig:
    """Read and validate ``config.json`` of a checkpoint directory (see
    ``checkpoint_directory`` for the directories it accepts)."""
    path = checkpoint_directory(directory)
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

    ``directory`` may also be a training run (its generator is loaded) or a checkpoint whose
    save was interrupted (see ``checkpoint_directory``). The config is checked against the
    weights file's header before any memory is allocated for the network, so a config that
    does not fit its weights fails at once, whatever sizes it names.

    Returns:
        ``(model, config)``; the model holds float32 weights on ``device``.

    Raises:
        CheckpointError: a missing, corrupt or inconsistent checkpoint.
    """
    path = checkpoint_directory(directory)
    config = read_config(path)
    weights_path = path / WEIGHTS_NAME
    if not weights_path.is_file():
        raise CheckpointError(f"{path} has no {WEIGHTS_NAME}")
    stored = _stored_shapes(weights_path)
    # On the meta device the network has shapes but no memory: a config naming 10**9
    # channels costs nothing to check.
    with torch.device("meta"):
        skeleton = _build(config, path)
    _check_shapes(skeleton, config, stored, weights_path)
    model = _build(config, path)
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
            f"{weights_path} does not match the architecture in config.json ({_shorten(detail)})"
        ) from None
    return model.to(device).eval(), config


def _build(config: ModelConfig, path: Path) -> nn.Module:
    try:
        return registry.build(config.arch, **config.arch_args)
    except KeyError as error:
        raise CheckpointError(f"{path}: {error.args[0]}; upgrade celpaint?") from None
    except (TypeError, ValueError, RuntimeError, OverflowError) as error:
        # RuntimeError: sizes too large to describe ("Storage size calculation overflowed").
        raise CheckpointError(
            f"{path}: config.json has bad arch_args ({_shorten(str(error))}); fix it or "
            "re-export the model"
        ) from None


def _stored_shapes(weights_path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape from the safetensors header, without reading any data."""
    try:
        with safe_open(str(weights_path), "pt") as handle:
            names = handle.keys()  # noqa: SIM118 - safe_open handles are not iterable
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in names}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{weights_path} is corrupt or not a safetensors file ({_shorten(str(error))})"
        ) from None
    return _strip_prefix(shapes)


def _check_shapes(
    skeleton: nn.Module, config: ModelConfig, stored: dict[str, tuple[int, ...]], weights: Path
) -> None:
    """Raise ``CheckpointError`` unless ``stored`` has exactly the tensors ``skeleton`` needs."""
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    missing = [name for name in expected if name not in stored]
    unexpected = [name for name in stored if name not in expected]
    resized = [name for name in expected if name in stored and expected[name] != stored[name]]
    problems = []
    if missing:
        problems.append(f"{_names(missing)} missing")
    if unexpected:
        problems.append(f"{_names(unexpected)} not in the network")
    if resized:
        first = resized[0]
        problems.append(
            f"{_names(resized)} of another shape ({first}: {list(stored[first])} stored, "
            f"{list(expected[first])} in config.json)"
        )
    if problems:
        raise CheckpointError(
            f"{weights} does not match the architecture in config.json: {'; '.join(problems)}. "
            "Use the config.json saved with these weights, or re-export the model"
        )


def _names(names: list[str]) -> str:
    """``"3 weights (a, b, c)"`` or ``"40 weights (a, b, c and 37 more)"``."""
    shown = ", ".join(names[:_NAMES_SHOWN])
    more = f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else ""
    return f"{len(names)} weight{'s' if len(names) != 1 else ''} ({shown}{more})"


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
