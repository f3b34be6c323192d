"""TrainConfig: its defaults, the data options it carries, the task it names."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from celpaint.color.task import LAB, PIX2PIX
from celpaint.errors import InputError
from celpaint.training.config import TrainConfig, option_name, read_config_file, run_options
from celpaint.training.data import DataSpec
from celpaint.training.gan import config_task, discriminator_args, generator_args


def test_train_config_carries_every_data_option_with_its_default():
    # train() builds its DataSpec from the TrainConfig fields of the same names.
    train_defaults = {field.name: field.default for field in fields(TrainConfig)}
    for field in fields(DataSpec):
        assert field.name in train_defaults
        assert train_defaults[field.name] == field.default, field.name


def test_the_model_names_the_task_and_the_channels():
    assert config_task(TrainConfig(model="pix2pix")) is PIX2PIX
    assert config_task(TrainConfig(model="lab")) is LAB
    lab = TrainConfig(model="lab")
    assert generator_args(lab)["out_channels"] == 2
    assert discriminator_args(lab)["in_channels"] == 3
    assert discriminator_args(TrainConfig())["in_channels"] == 4


def _numeric_fields() -> list[str]:
    numeric = ("int", "float", "int | None", "float | None")
    return [f.name for f in fields(TrainConfig) if f.type in numeric]


@pytest.mark.parametrize("name", _numeric_fields())
def test_every_numeric_option_refuses_a_negative_value(name):
    with pytest.raises(InputError, match=f"^{option_name(name)} must be"):
        TrainConfig(**{name: -1}).check()


@pytest.mark.parametrize("name", [n for n in _numeric_fields() if "float" in
                                  TrainConfig.__dataclass_fields__[n].type])  # fmt: skip
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_every_float_option_refuses_nan_and_infinity(name, value):
    with pytest.raises(InputError, match=option_name(name)):
        TrainConfig(**{name: value}).check()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"depth": 1}, r"--depth must be a whole number in \[2, 12\], got 1"),
        ({"depth": 13}, "--depth"),
        ({"base_channels": 0}, "--base-channels"),
        ({"max_channels": 0}, "--max-channels"),
        ({"max_channels": 10**9}, "--max-channels"),
        ({"disc_base_channels": 0}, "--disc-channels"),
        ({"disc_layers": 0}, "--disc-layers"),
        ({"lr": 0.0}, "--lr must be positive"),
        ({"beta1": 1.0}, r"--beta1 must be a number in \[0, 1\)"),
        ({"val_fraction": 1.0}, "--val-fraction"),
        ({"dropout": 1.0}, "--dropout"),
        ({"decay_start": 1.5}, "--decay-start"),
        ({"epochs": 0}, "--epochs must be a whole number at least 1"),
        ({"seed": 2**63}, "--seed"),
        ({"crop": 2.5}, "--crop"),
    ],
)
def test_out_of_range_options_name_the_option(values, message):
    with pytest.raises(InputError, match=message):
        TrainConfig(**values).check()


def test_the_defaults_and_the_edges_pass():
    TrainConfig().check()
    TrainConfig(depth=2, seed=0, workers=0, val_fraction=0, dropout=0, pixel_weight=0).check()


def test_a_config_file_gives_options_by_field_name(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('model = "lab"\nepochs = 3\nbatch-size = 8\nlr = 1e-3\nnorm = "instance"\n')
    options = read_config_file(toml)
    assert options == {"model": "lab", "epochs": 3, "batch_size": 8, "lr": 1e-3,
                       "norm": "instance"}  # fmt: skip
    TrainConfig(**options).check()
    # A run's config.json reads back as the options it was written from.
    config = TrainConfig(model="lab", depth=4, pixel_loss="l1", sketch=None, threads=2)
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps(run_options(config)))
    assert TrainConfig(**read_config_file(saved)) == config


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.json", '{"epochs": 2, "epoch": 3, "hue": "x"}', r"unknown option\(s\) epoch, hue"),
        ("a.json", '{"resume": true}', "pass --resume on the command line"),
        ("a.json", "[1, 2]", "must hold an object of options"),
        ("a.json", "{epochs: 2}", "is not valid JSON"),
        ("a.toml", "epochs = ", "is not valid TOML"),
    ],
)
def test_a_bad_config_file_names_what_is_wrong(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_config_file(path)
    with pytest.raises(InputError, match="cannot read it"):
        read_config_file(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"norm": "layer"}, "--norm must be one of batch, instance, none, got 'layer'"),
        ({"pixel_loss": "l2"}, "--pixel-loss must be one of l1, mse"),
        ({"model": "cyclegan"}, "--model must be one of pix2pix, lab"),
        ({"sketch": 3}, "--sketch must be text, got 3"),
        ({"cache": "yes"}, "--no-cache must be true or false"),
    ],
)
def test_values_of_the_wrong_kind_name_the_option(values, message):
    # A config file can hold anything; check() is where every value is checked.
    with pytest.raises(InputError, match=message):
        TrainConfig(**values).check()
