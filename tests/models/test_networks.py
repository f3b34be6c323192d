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
    with pytest.raises(ValueError, match="multiples of 8"):
        network(torch.rand(1, 1, 30, 24))


def test_patchgan_patches_are_70_pixels_wide():
    network = build("patchgan", in_channels=1, base_channels=4, n_layers=3).eval()
    x = torch.rand(1, 1, 128, 128, requires_grad=True)
    output = network(x)
    h, w = output.shape[-2:]
    output[0, 0, h // 2, w // 2].backward()
    rows = (x.grad[0, 0].abs().sum(dim=1) > 0).sum().item()
    cols = (x.grad[0, 0].abs().sum(dim=0) > 0).sum().item()
    assert (rows, cols) == (70, 70)
