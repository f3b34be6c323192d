"""The models shipped inside the package (``celpaint/models/weights/<name>/``)."""

from __future__ import annotations

import os
from pathlib import Path

from celpaint.errors import CheckpointError
from celpaint.models.checkpoint import (
    CONFIG_NAME,
    ModelConfig,
    checkpoint_directory,
    previous_directory,
    read_config,
)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# The model ``Colorizer.from_pretrained`` loads when given none.
DEFAULT_MODEL = "lineart"
# ``--model auto`` (the default of ``celpaint colorize``): the shipped model that fits each
# input, by what the input looks like (``ops.lineart.guess_input_kind``).
AUTO = "auto"
MODEL_FOR_INPUT = {"lineart": "lineart", "grayscale": "gray"}


def model_for(input_kind: str | None) -> str:
    """The shipped model for an input kind (``"lineart"`` or ``"grayscale"``), the default
    model when the kind is unknown (None)."""
    return MODEL_FOR_INPUT.get(input_kind, DEFAULT_MODEL) if input_kind else DEFAULT_MODEL


def shipped_models() -> dict[str, Path]:
    """Names of the shipped models and their directories, sorted by name."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(WEIGHTS_DIR.iterdir()) if (p / CONFIG_NAME).is_file()}


def resolve(name_or_path: str | os.PathLike) -> Path:
    """Turn ``--model`` into a checkpoint directory: a shipped name, or a path (``./auto`` for a
    directory named like ``AUTO``, which is no model: the pipeline chooses one per input)."""
    text = str(name_or_path)
    if text == AUTO:
        raise CheckpointError(
            f"{AUTO!r} picks a shipped model per input when colorizing; name a model here "
            f"({', '.join(shipped_models()) or 'none are installed'}) or a directory"
        )
    shipped = shipped_models()
    if text in shipped:
        return shipped[text]
    path = Path(text).expanduser()
    # A checkpoint whose save was interrupted may exist only as its previous copy.
    if path.exists() or previous_directory(path).exists():
        return path
    names = ", ".join(shipped) or "none are installed"
    raise CheckpointError(
        f"model {text!r} is neither a shipped model ({names}) nor an existing directory"
    )


def generator_directory(name_or_path: str | os.PathLike) -> Path:
    """``resolve``, then into ``generator/`` when given a training run directory (which holds
    the generator there, beside its discriminator), or to the previous copy of a checkpoint
    whose save was interrupted (``checkpoint.checkpoint_directory``)."""
    return checkpoint_directory(resolve(name_or_path))


def describe() -> list[tuple[str, ModelConfig]]:
    """``(name, config)`` of every shipped model."""
    return [(name, read_config(path)) for name, path in shipped_models().items()]
