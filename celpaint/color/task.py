"""The two model variants, each described once: what the network sees and what it predicts.

* ``PIX2PIX``: line art -> RGB. The network sees gray line art ``(B, 1, H, W)`` as
  ``gray * 2 - 1`` and predicts RGB ``(B, 3, H, W)`` in ``[-1, 1]``; the output's L* is a
  prediction.
* ``LAB``: grayscale -> a*b*. The network sees L* as ``L / 50 - 1`` and predicts a*b*
  ``(B, 2, H, W)`` as ``ab / 110``; the output keeps the input's L* exactly.

The colorizer, the trainer and the checkpoint ask a ``Task`` instead of branching on names.
"""

from __future__ import annotations

import numpy as np
import torch

from celpaint.color import array, tensor


class Task:
    """A model variant. Instances are the module constants ``PIX2PIX`` and ``LAB``.

    Attributes:
        name: ``"pix2pix"`` or ``"lab"`` (``celpaint train --model``; ``task`` in config.json).
        input_kind: ``"lineart"`` or ``"grayscale"``: what the user feeds it.
        output: ``"rgb"`` or ``"ab"``: what the network predicts.
        in_channels, out_channels: the network's channels.
        keeps_input_lightness: the output's L* is the input's (a*b* models), not predicted.
        reads_gray: the network input depends on the frames' gray level alone, so gray
            ``(B, 1, H, W)`` frames may stand in for RGB ones (line art).
        takes_line_art: training pairs need line art (from ``--sketch`` or drawn by XDoG
            from the color frames); otherwise the input is derived from the color frames.
        normalisation: how pixels map to network ranges, as saved in ``config.json``.
    """

    name: str
    input_kind: str
    output: str
    out_channels: int
    keeps_input_lightness: bool
    reads_gray: bool
    takes_line_art: bool
    in_channels = 1

    @property
    def normalisation(self) -> dict[str, str]:
        raise NotImplementedError

    def to_network(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``(B, C, H, W)`` float in ``[0, 1]`` -> the network input ``(B, 1, H, W)``.

        ``C`` is 3 (RGB), or 1 (gray) for line art.
        """
        raise NotImplementedError

    def target(self, rgb: torch.Tensor) -> torch.Tensor:
        """True colors, RGB ``(B, 3, H, W)`` in ``[0, 1]`` -> the training target
        ``(B, out_channels, H, W)`` in the network's output range."""
        raise NotImplementedError

    def to_lab(self, output: torch.Tensor, source: torch.Tensor) -> np.ndarray:
        """The network's output and its input (both cropped to ``(B, *, h, w)``) -> float32
        L*a*b* ``(B, h, w, 3)`` on the CPU in OpenCV's convention (``color.array``)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"Task({self.name!r}: {self.input_kind} -> {self.output})"


class _LineArtToRGB(Task):
    name = "pix2pix"
    input_kind = "lineart"
    output = "rgb"
    out_channels = 3
    keeps_input_lightness = False
    reads_gray = True
    takes_line_art = True

    @property
    def normalisation(self) -> dict[str, str]:
        return {"input": tensor.NORMALISATION["lineart"], "output": tensor.NORMALISATION["rgb"]}

    def to_network(self, frames: torch.Tensor) -> torch.Tensor:
        gray = frames if frames.shape[1] == 1 else tensor.rgb_to_gray(frames)
        return tensor.normalize_unit(gray.clamp(0, 1))

    def target(self, rgb: torch.Tensor) -> torch.Tensor:
        return tensor.normalize_unit(rgb)

    def to_lab(self, output: torch.Tensor, source: torch.Tensor) -> np.ndarray:
        frames = tensor.denormalize_unit(output).permute(0, 2, 3, 1).contiguous().cpu().numpy()
        # The conversion is per pixel, so the batch goes through as one tall image: no
        # per-frame calls and no copy to stack them.
        batch, height, width = frames.shape[:3]
        tall = frames.reshape(batch * height, width, 3)
        return array.rgb_to_lab(tall).reshape(batch, height, width, 3)


class _GrayToAB(Task):
    name = "lab"
    input_kind = "grayscale"
    output = "ab"
    out_channels = 2
    keeps_input_lightness = True
    reads_gray = False
    takes_line_art = False

    @property
    def normalisation(self) -> dict[str, str]:
        return {"input": tensor.NORMALISATION["l"], "output": tensor.NORMALISATION["ab"]}

    def to_network(self, frames: torch.Tensor) -> torch.Tensor:
        return tensor.normalize_l(tensor.rgb_to_lab(frames)[:, :1])

    def target(self, rgb: torch.Tensor) -> torch.Tensor:
        return tensor.normalize_ab(tensor.rgb_to_lab(rgb)[:, 1:])

    def to_lab(self, output: torch.Tensor, source: torch.Tensor) -> np.ndarray:
        lab = torch.cat([tensor.denormalize_l(source), tensor.denormalize_ab(output)], dim=1)
        return lab.permute(0, 2, 3, 1).contiguous().cpu().numpy()


PIX2PIX: Task = _LineArtToRGB()
LAB: Task = _GrayToAB()
TASKS: dict[str, Task] = {task.name: task for task in (PIX2PIX, LAB)}


def task_named(name: str) -> Task:
    """The task called ``name`` (``"pix2pix"`` or ``"lab"``).

    Raises:
        ValueError: an unknown name.
    """
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


def task_for(input_kind: str, output: str) -> Task:
    """The task that maps ``input_kind`` to ``output`` (a checkpoint's two fields).

    Raises:
        ValueError: no task does.
    """
    for task in TASKS.values():
        if (task.input_kind, task.output) == (input_kind, output):
            return task
    raise ValueError(f"no model variant maps {input_kind!r} input to {output!r} output")
