"""TrainConfig: its defaults, the data options it carries, the task it names."""

from __future__ import annotations

from dataclasses import fields

import pytest

from celpaint.color.task import LAB, PIX2PIX
from celpaint.errors import InputError
from celpaint.training.config import TrainConfig, discriminator_args, generator_args
from celpaint.training.data import DataSpec


def test_train_config_carries_every_data_option_with_its_default():
    # train() builds its DataSpec from the TrainConfig fields of the same names.
    train_defaults = {field.name: field.default for field in fields(TrainConfig)}
    for field in fields(DataSpec):
        assert field.name in train_defaults
        assert train_defaults[field.name] == field.default, field.name


def test_the_model_names_the_task_and_the_channels():
    assert TrainConfig(model="pix2pix").task is PIX2PIX
    assert TrainConfig(model="lab").task is LAB
    lab = TrainConfig(model="lab")
    assert generator_args(lab)["out_channels"] == 2
    assert discriminator_args(lab)["in_channels"] == 3
    assert discriminator_args(TrainConfig())["in_channels"] == 4
    with pytest.raises(InputError, match="--model"):
        TrainConfig(model="cyclegan").check()
