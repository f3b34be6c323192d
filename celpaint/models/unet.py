"""U-Net generator (pix2pix, Isola et al. 2017), sized by typed arguments."""

from __future__ import annotations

import torch
from torch import nn

from celpaint.models.layers import NormKind, norm_layer
from celpaint.models.registry import register


class _Down(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, norm: NormKind, outermost: bool):
        super().__init__()
        # The outermost layer sees raw input pixels: pix2pix applies no activation before it.
        self.act = nn.Identity() if outermost else nn.LeakyReLU(0.2, inplace=False)
        # Biases are redundant in front of a normalisation layer that has its own shift.
        use_bias = norm != "batch" or outermost
        self.conv = nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1, bias=use_bias)
        self.norm = nn.Identity() if outermost else norm_layer(norm, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(self.act(x)))


class _Up(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, norm: NormKind, dropout: float):
        super().__init__()
        self.act = nn.ReLU(inplace=False)
        use_bias = norm != "batch"
        self.conv = nn.ConvTranspose2d(
            in_channels, out_channels, 4, stride=2, padding=1, bias=use_bias
        )
        self.norm = norm_layer(norm, out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.norm(self.conv(self.act(x))))


@register("unet")
class UNetGenerator(nn.Module):
    """Encoder-decoder with skip connections between mirrored levels.

    Each level halves the resolution, so inputs must have height and width divisible by
    ``size_multiple == 2 ** depth``.

    Args:
        in_channels: channels of the input (1 for line art or L*).
        out_channels: channels of the output (3 for RGB, 2 for a*b*).
        depth: number of down-sampling levels.
        base_channels: channels after the first level; doubled per level up to ``max_channels``.
        max_channels: cap on the channels of any level.
        norm: normalisation after each convolution ("batch" as in pix2pix).
        dropout: dropout in the innermost ``dropout_levels`` decoder levels (pix2pix's noise).
        dropout_levels: how many decoder levels (from the innermost) use dropout.

    Shapes:
        ``(B, in_channels, H, W)`` in ``[-1, 1]`` -> ``(B, out_channels, H, W)`` in ``[-1, 1]``.

    Raises:
        ValueError: ``depth < 2`` or an unknown ``norm`` (on construction); an input whose
            height or width is not a multiple of ``size_multiple`` (in ``forward``).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 3,
        depth: int = 8,
        base_channels: int = 64,
        max_channels: int = 512,
        norm: NormKind = "batch",
        dropout: float = 0.5,
        dropout_levels: int = 3,
    ):
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be at least 2, got {depth}")
        if norm not in ("batch", "instance", "none"):
            raise ValueError(f"norm must be 'batch', 'instance' or 'none', got {norm!r}")
        self.size_multiple = 2**depth

        widths = [min(base_channels * 2**i, max_channels) for i in range(depth)]
        self.down = nn.ModuleList()
        previous = in_channels
        for level, width in enumerate(widths):
            # The innermost level maps a 2x2 feature map to 1x1: normalising one value per
            # channel with batch statistics is ill-defined at batch size 1, so it has none.
            innermost = level == depth - 1
            self.down.append(
                _Down(previous, width, "none" if innermost else norm, outermost=level == 0)
            )
            previous = width

        self.up = nn.ModuleList()
        for level in reversed(range(1, depth)):
            # Input: the deeper decoder output, concatenated with the encoder skip (except
            # at the innermost level, which has no skip yet).
            in_width = widths[level] if level == depth - 1 else widths[level] * 2
            use_dropout = dropout if (depth - 1 - level) < dropout_levels else 0.0
            self.up.append(_Up(in_width, widths[level - 1], norm, use_dropout))
        self.final = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.ConvTranspose2d(widths[0] * 2, out_channels, 4, stride=2, padding=1),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % self.size_multiple or width % self.size_multiple:
            raise ValueError(
                f"input height and width must be multiples of {self.size_multiple}, "
                f"got {height}x{width}; pad the input first"
            )
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        x = skips.pop()
        for layer in self.up:
            x = torch.cat([layer(x), skips.pop()], dim=1)
        return self.final(x)
