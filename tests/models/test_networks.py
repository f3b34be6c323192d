"""A forward (and backward) test over every registered network, in tiny configurations."""

from __future__ import annotations

import pytest
import torch

from celpaint.models.registry import available, build

# Tiny constructor arguments and an input shape for each registered architecture. A new
# architecture must add an entry here: the test below fails for one it does not know.
TINY = {
    "unet": (dict(in_channels=1, out_channels=3, depth=3, base_channels=4, max_channels=8),
             (2, 1, 32, 24)),
    "patchgan": (dict(in_channels=4, base_channels=4, n_layers=3), (2, 4, 48, 40)),
}  # fmt: skip


@pytest.mark.parametrize("name", available())
def test_forward_and_backward(name):
    assert name in TINY, f"add tiny arguments for the architecture {name!r} to TINY"
    kwargs, shape = TINY[name]
    torch.manual_seed(0)
    network = build(name, **kwargs)
    x = torch.rand(shape) * 2 - 1
    output = network(x)
    assert output.shape[0] == shape[0]
    assert torch.isfinite(output).all()
    output.square().mean().backward()
    missing = [n for n, p in network.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    network.eval()
    with torch.no_grad():
        assert torch.equal(network(x), network(x))


def test_unet_keeps_the_size_and_stays_in_range():
    network = build("unet", **TINY["unet"][0]).eval()
    output = network(torch.rand(1, 1, 32, 24) * 2 - 1)
    assert output.shape == (1, 3, 32, 24)
    assert output.abs().max() <= 1


@pytest.mark.parametrize("shape", [(30, 24), (36, 20), (17, 9), (8, 8)])
def test_unet_takes_any_size(shape):
    network = build("unet", **TINY["unet"][0]).eval()
    with torch.no_grad():
        output = network(torch.rand(2, 1, *shape) * 2 - 1)
    assert output.shape == (2, 3, *shape)
    assert torch.isfinite(output).all()


def test_unet_pads_a_level_by_repeating_its_last_row_and_column():
    """At a size that is not a multiple of 2**depth, the network computes what it computes on
    an input whose odd-sized levels repeat their last row/column: for a depth-1-deep change
    (a 30-row input, 15 rows after the first level) the first 14 rows of a 32-row input that
    repeats the border as the network does agree exactly away from the padded border."""
    torch.manual_seed(0)
    network = build("unet", in_channels=1, out_channels=3, depth=2, base_channels=4).eval()
    x = torch.rand(1, 1, 30, 24) * 2 - 1  # level 1 sees 15 rows: padded to 16 there
    with torch.no_grad():
        own = network(x)
        assert own.shape == (1, 3, 30, 24)
        # Sizes that are multiples of 2**depth never pad: the result is that of the layers.
        whole = torch.rand(1, 1, 32, 24) * 2 - 1
        skips, h = [], whole
        for layer in network.down:
            h = layer(h)
            skips.append(h)
        h = skips.pop()
        for layer in network.up:
            h = torch.cat([layer(h), skips.pop()], dim=1)
        assert torch.equal(network.final(h), network(whole))
    # The top rows are far from the padded border: equal to the unpadded input's.
    top = network(torch.cat([x, x[:, :, -2:]], dim=2))
    assert torch.allclose(own[:, :, :8], top[:, :, :8], atol=0.05)


def test_patchgan_patches_are_70_pixels_wide():
    network = build("patchgan", in_channels=1, base_channels=4, n_layers=3).eval()
    x = torch.rand(1, 1, 128, 128, requires_grad=True)
    output = network(x)
    h, w = output.shape[-2:]
    output[0, 0, h // 2, w // 2].backward()
    rows = (x.grad[0, 0].abs().sum(dim=1) > 0).sum().item()
    cols = (x.grad[0, 0].abs().sum(dim=0) > 0).sum().item()
    assert (rows, cols) == (70, 70)
