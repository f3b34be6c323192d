"""The Trainer: one discriminator step and one generator step, overfitting, the schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from celpaint.models import build
from celpaint.training.config import TrainConfig
from celpaint.training.data import DataSpec, build_datasets
from celpaint.training.gan import Trainer, config_task, init_weights, linear_decay
from tests.training.test_data import make_pairs

TINY_NETS = dict(depth=3, base_channels=4, max_channels=8, disc_base_channels=4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(root: Path, model: str, count: int = 4) -> dict[str, torch.Tensor]:
    spec = DataSpec(sketch=root / "sketch" if model == "pix2pix" else None,
                    color=root / "color", val_fraction=0)  # fmt: skip
    dataset, _, _ = build_datasets(spec, model == "pix2pix", crop=32, work_size=None)
    samples = [dataset[(i, 0, 0, i)] for i in range(count)]
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


GENERATOR_ARGS = dict(in_channels=1, depth=3, base_channels=8, max_channels=32)


def _trainer(model: str, lr: float = 2e-4, dropout: float = 0.5, steps: int = 100) -> Trainer:
    torch.manual_seed(0)
    config = TrainConfig(model=model, lr=lr, dropout=dropout, **TINY_NETS)
    out_channels = config_task(config).out_channels
    generator = build("unet", out_channels=out_channels, dropout=dropout, **GENERATOR_ARGS)
    discriminator = build("patchgan", in_channels=1 + out_channels, base_channels=8)
    init_weights(generator)
    init_weights(discriminator)
    return Trainer(config, generator, discriminator, "cpu", total_steps=steps)


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(before, module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


@pytest.mark.parametrize("model", ["pix2pix", "lab"])
def test_d_step_and_g_step_update_only_their_network(tmp_path, model):
    make_pairs(tmp_path, count=4, size=(32, 32))
    trainer = _trainer(model)
    batch = trainer.prepare(_batch(tmp_path, model))
    generator, discriminator = _params(trainer.generator), _params(trainer.discriminator)
    d_losses = trainer.d_step(batch)
    assert set(d_losses) == {"d_real", "d_fake", "d_total"}
    assert _changed(discriminator, trainer.discriminator)
    assert not _changed(generator, trainer.generator)
    discriminator = _params(trainer.discriminator)
    g_losses = trainer.g_step(batch)
    assert set(g_losses) == {"g_adv", "g_pixel", "g_total"}
    assert _changed(generator, trainer.generator)
    assert not _changed(discriminator, trainer.discriminator)
    assert all(p.requires_grad for p in trainer.discriminator.parameters())
    assert all(isinstance(v, float) for v in {**d_losses, **g_losses}.values())


@pytest.mark.parametrize("model", ["pix2pix", "lab"])
def test_a_few_steps_overfit_four_pairs(tmp_path, model):
    make_pairs(tmp_path, count=4, size=(32, 32))
    trainer = _trainer(model, lr=1e-3, dropout=0.0)
    batch = _batch(tmp_path, model)
    prepared = trainer.prepare(batch)

    def l1_error() -> float:
        with torch.no_grad():
            return (trainer.generator(prepared.source) - prepared.target).abs().mean().item()

    before = l1_error()
    for _ in range(40):
        trainer.train_step(batch)
    after = l1_error()
    assert after < 0.5 * before, (before, after)


def test_linear_decay_halves_then_falls_linearly():
    factor = linear_decay(total_steps=10, decay_start=0.5)
    assert [factor(s) for s in range(5)] == [1.0] * 5
    decayed = [factor(s) for s in range(5, 10)]
    assert decayed == pytest.approx([1 - i / 6 for i in range(5)])
    assert decayed[-1] > 0
