"""Validation of a training run: the generator colorizes whole frames through the pipeline's
``Colorizer``, fed what a user would feed it, and is scored against the true colors."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from celpaint.color import tensor as color
from celpaint.models import registry
from celpaint.models.checkpoint import ModelConfig, unwrap
from celpaint.ops.metrics import frame_metrics
from celpaint.pipeline.colorizer import Colorizer
from celpaint.training.data import PairDataset

Column = tuple[np.ndarray, np.ndarray, np.ndarray]


def validation_colorizer(
    generator: nn.Module, config: ModelConfig, device: torch.device
) -> Colorizer:
    """A ``Colorizer`` around a copy of ``generator``'s current weights, as ``save_model``
    would save them and ``colorize --model`` would load them (float32, eval mode).

    The training generator itself is left alone: the ``Colorizer`` would put it in eval mode
    and change its memory format.
    """
    # Building a network initialises its weights from the global RNG; forked, so that
    # validating draws nothing from the run's random stream (dropout masks after validation
    # stay those of a run that never validated, or that resumed).
    with torch.random.fork_rng(devices=[]):
        copy = registry.build(config.arch, **config.arch_args)
    copy.load_state_dict(unwrap(generator).state_dict())
    # Validation frames are within the run's work size already; a work size below the size
    # multiple (accepted for training) only needs padding.
    work_size = max(config.work_size, config.size_multiple)
    # PyTorch: the weights change every epoch, and exporting them for ONNX Runtime each time
    # would cost more than it saves.
    return Colorizer(copy, config, device=device, precision="fp32", work_size=work_size,
                     batch_size=1, backend="torch")  # fmt: skip


def user_frame(line_art: np.ndarray | None, rgb: np.ndarray) -> np.ndarray:
    """What a user colorizes for a pair: its line art as uint8 RGB ``(H, W, 3)`` (three equal
    channels) when there is line art, else the color frame (a grayscale model sees its L*)."""
    if line_art is None:
        return rgb
    return np.repeat(line_art[:, :, None], 3, axis=2)


def shown_input(line_art: np.ndarray | None, rgb: np.ndarray) -> np.ndarray:
    """The input row of a sample grid: the line art, or the L* of the frame shown as gray."""
    if line_art is not None:
        return line_art
    frame = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    lab = color.rgb_to_lab(frame)
    gray = color.lab_to_rgb(torch.cat([lab[:, :1], torch.zeros_like(lab[:, 1:])], 1))
    return (gray[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def colorize_frames(
    colorizer: Colorizer, frames: PairDataset, shown: int, scored: int
) -> tuple[list[Column], list[dict[str, float]]]:
    """Colorize the first ``max(shown, scored)`` frames of ``frames``, each once.

    Returns:
        ``(columns, scores)``: (input, generated, ground truth) of the first ``shown`` frames
        for ``sample_grid``, and ``frame_metrics`` of the first ``scored``.
    """
    columns, scores = [], []
    for index in range(max(shown, scored)):
        line_art, rgb = frames.pair(index)
        generated = colorizer.colorize(user_frame(line_art, rgb)[None])[0]
        if index < shown:
            columns.append((shown_input(line_art, rgb), generated, rgb))
        if index < scored:
            scores.append(frame_metrics(generated, rgb))
    return columns, scores
