"""PatchGAN discriminator (pix2pix): classifies overlapping patches as real or generated."""

from __future__ import annotations

import torch
from torch import nn

from celpaint.models.layers import NormKind, norm_layer
from celpaint.models.registry import register


@register("patchgan")
class PatchDiscriminator(nn.Module):
    """A stack of strided 4x4 convolutions whose outputs each see one image patch.

    With ``n_layers=3`` each output's receptive field is 70x70 pixels (the pix2pix default).

    Args:
        in_channels: channels of the conditioning input and the image, concatenated
            (e.g. 1 + 3 for line art with RGB, 1 + 2 for L* with a*b*).
        base_channels: channels of the first layer, doubled per layer up to 8x.
        n_layers: number of strided layers.
        norm: normalisation after each inner convolution.

    Shapes:
        ``(B, in_channels, H, W)`` -> ``(B, 1, H', W')`` logits, one per patch.
    """

    def __init__(
        self,
        in_channels: int = 4,
        base_channels: int = 64,
        n_layers: int = 3,
        norm: NormKind = "batch",
    ):
        super().__init__()
        use_bias = norm != "batch"
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        width = base_channels
        for i in range(1, n_layers + 1):
            previous, width = width, base_channels * min(2**i, 8)
            # The last inner layer keeps the resolution, as in pix2pix, to reach 70x70.
            stride = 1 if i == n_layers else 2
            layers += [
                nn.Conv2d(previous, width, 4, stride=stride, padding=1, bias=use_bias),
                norm_layer(norm, width),
                nn.LeakyReLU(0.2),
            ]
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
