"""Color conversions on tensors and the normalisation constants used by every model.

Conversions are kornia's (sRGB with the D65 white point); this module only fixes the
ranges the networks see, so that they are stated in one place:

* RGB images: ``(*, 3, H, W)`` floats in ``[0, 1]``; networks see ``rgb * 2 - 1``.
* L*: ``0..100``; networks see ``L / 50 - 1``.
* a*, b*: roughly ``-110..110`` for sRGB colors; networks see ``ab / 110``.

The conversions raise ``TypeError`` for anything but a floating point tensor and ``ValueError``
for a shape other than ``(*, 3, H, W)``. The numpy (OpenCV) versions are in
``celpaint.color.array``; how the two compare: docs/design.md#color-conversions-color
"""

from __future__ import annotations

import kornia.color
import torch

L_SCALE = 50.0
AB_SCALE = 110.0

NORMALISATION = {
    "rgb": "rgb * 2 - 1",
    "lineart": "gray * 2 - 1",
    "l": f"L / {L_SCALE:g} - 1",
    "ab": f"ab / {AB_SCALE:g}",
}


def _check_image(image: torch.Tensor, channels: int, name: str) -> None:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() < 3 or image.shape[-3] != channels:
        raise ValueError(f"{name} must have shape (*, {channels}, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {image.dtype}")


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB ``(*, 3, H, W)`` in ``[0, 1]`` to L*a*b* ``(*, 3, H, W)`` (L in 0..100)."""
    _check_image(rgb, 3, "rgb")
    # Half precision loses too much in the gamma curve; convert in float32.
    return kornia.color.rgb_to_lab(rgb.float().clamp(0, 1)).to(rgb.dtype)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """L*a*b* ``(*, 3, H, W)`` to sRGB ``(*, 3, H, W)`` clipped to ``[0, 1]``."""
    _check_image(lab, 3, "lab")
    return kornia.color.lab_to_rgb(lab.float(), clip=True).to(lab.dtype)


def rgb_to_gray(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB ``(*, 3, H, W)`` to Rec. 601 luma ``(*, 1, H, W)``, same range."""
    _check_image(rgb, 3, "rgb")
    weights = rgb.new_tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    return (rgb * weights).sum(dim=-3, keepdim=True)


def normalize_l(l_channel: torch.Tensor) -> torch.Tensor:
    return l_channel / L_SCALE - 1.0


def denormalize_l(l_norm: torch.Tensor) -> torch.Tensor:
    return (l_norm + 1.0) * L_SCALE


def normalize_ab(ab: torch.Tensor) -> torch.Tensor:
    return ab / AB_SCALE


def denormalize_ab(ab_norm: torch.Tensor) -> torch.Tensor:
    return ab_norm * AB_SCALE


def normalize_unit(x: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` to ``[-1, 1]`` (RGB targets and line art inputs)."""
    return x * 2.0 - 1.0


def denormalize_unit(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)
