"""Building blocks shared by the networks."""

from __future__ import annotations

from typing import Literal

from torch import nn

NormKind = Literal["batch", "instance", "none"]
NORM_KINDS: tuple[NormKind, ...] = ("batch", "instance", "none")


def norm_layer(kind: NormKind, channels: int) -> nn.Module:
    """The normalisation layer ``kind`` over ``channels`` channels (``none``: identity).

    Raises:
        ValueError: an unknown ``kind``.
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {', '.join(NORM_KINDS)}, got {kind!r}")
