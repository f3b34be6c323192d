"""U-Net generator (pix2pix, Isola et al. 2017), sized by typed arguments."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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

    Each level halves the resolution. Inputs of any size are accepted: a level whose input has
    an odd height or width first repeats its last row or column (replicate padding), and the
    decoder crops each upsampled map back to its skip's size, so the output has the input's
    size. Sizes that are multiples of ``exact_multiple == 2 ** depth`` involve no padding; other
    sizes pad at most one row and column per level, i.e. only in the deep, low-resolution
    levels for sizes that are multiples of a small power of two. A model trained on whole
    crops of ``exact_multiple`` sizes has never seen those padded borders; which multiple a
    trained model is fed is its checkpoint's ``size_multiple`` (``ModelConfig``).

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
        ValueError: ``depth < 2`` or an unknown ``norm`` (on construction).
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
        self.exact_multiple = 2**depth
        # Inputs of any size work (see above): the network itself needs no multiple.
        self.size_multiple = 1

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
        skips = []
        for layer in self.down:
            x = layer(_even(x))
            skips.append(x)
        x = skips.pop()
        for layer in self.up:
            skip = skips.pop()
            x = torch.cat([layer(x)[..., : skip.shape[-2], : skip.shape[-1]], skip], dim=1)
        return self.final(x)[..., :height, :width]


def _even(x: torch.Tensor) -> torch.Tensor:
    """``x`` with its last row and/or column repeated where its height or width is odd."""
    height, width = x.shape[-2:]
    tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
    if not tracing and height % 2 == 0 and width % 2 == 0:
        return x
    # When traced (ONNX export, torch.compile) the amounts stay computed from the shape.
    return F.pad(x, (0, width % 2, 0, height % 2), mode="replicate")
