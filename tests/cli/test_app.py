"""The app itself: help without torch, choices listed and enforced, shell completion, and the
CLI's literal defaults and choice lists pinned to the library's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import get_args, get_type_hints

import pytest
import typer

from celpaint.cli import colorize, lineart, options, train
from celpaint.cli.app import app, main

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "numpy", "cv2", "kornia", "skimage", "matplotlib", "PIL", "scipy")

# Runs `python -m celpaint ARGS` in this process and prints which heavy modules it imported.
_PROBE = """
import json, runpy, sys
heavy = json.loads(sys.argv[2])
sys.argv = ["celpaint", *json.loads(sys.argv[1])]
try:
    runpy.run_module("celpaint", run_name="__main__")
except SystemExit:
    pass
sys.stderr.write("\\nIMPORTED " + json.dumps([m for m in heavy if m in sys.modules]) + "\\n")
"""


def _probe(args: list[str], env: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """Run the CLI with ``args`` in a fresh interpreter: its stdout, and the heavy modules
    that were imported."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args), json.dumps(HEAVY)],
        capture_output=True, text=True, env=environment, timeout=120, cwd=ROOT,
    )  # fmt: skip
    marker = [line for line in done.stderr.splitlines() if line.startswith("IMPORTED ")]
    assert marker, done.stderr
    return done.stdout, json.loads(marker[-1].removeprefix("IMPORTED "))


def _commands() -> dict:
    return typer.main.get_command(app).commands


@pytest.mark.parametrize(
    "args", [["--help"], *([name, "--help"] for name in sorted(_commands()))], ids=" ".join
)
def test_help_imports_no_torch_numpy_or_opencv(args):
    out, imported = _probe(args)
    assert "Usage: celpaint" in out
    assert imported == []


def test_completion_completes_choices_and_shipped_models_without_torch():
    env = {"_CELPAINT_COMPLETE": "complete_bash", "COMP_WORDS": "celpaint colorize --preset ve",
           "COMP_CWORD": "3"}  # fmt: skip
    out, imported = _probe([], env)
    assert out.split() == ["veryfast", "veryslow"] and imported == []
    env.update(COMP_WORDS="celpaint colorize --model ", COMP_CWORD="3")
    out, imported = _probe([], env)
    assert out.split() == [options.AUTO, *options.SHIPPED_MODELS] and imported == []
    env.update(COMP_WORDS="celpaint tr", COMP_CWORD="1")
    assert _probe([], env)[0].split() == ["train"]


def test_completion_script_is_shown_and_installed(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "SHELL": "/bin/bash"}
    command = [sys.executable, "-m", "celpaint"]
    shown = subprocess.run([*command, "--show-completion", "bash"], capture_output=True,
                           text=True, env=env, timeout=120)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "_CELPAINT_COMPLETE=complete_bash" in shown.stdout
    assert "complete -o default -F _celpaint_completion celpaint" in shown.stdout
    installed = subprocess.run([*command, "--install-completion", "bash"], capture_output=True,
                               text=True, env=env, timeout=120)  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    script = tmp_path / ".bash_completions" / "celpaint.sh"
    assert script.read_text().strip() == shown.stdout.strip()
    assert str(script) in (tmp_path / ".bashrc").read_text()


def _choice_options() -> list[tuple[str, str, tuple[str, ...]]]:
    found = []
    for name, command in sorted(_commands().items()):
        for param in command.params:
            choices = param.type_descriptor.choices
            if choices:
                found.append((name, param.opts[0], tuple(str(c) for c in choices)))
    return found


def test_the_choice_options_are_the_expected_ones():
    # A choice option added as plain text would skip the parser's check and the list in --help.
    by_option = {(name, option) for name, option, _ in _choice_options()}
    assert by_option == {
        ("colorize", "--precision"), ("colorize", "--preset"), ("assemble", "--preset"),
        ("lineart", "--preset"), ("train", "--model"), ("train", "--match"),
        ("train", "--aligned-order"), ("train", "--on-error"), ("train", "--pixel-loss"),
        ("train", "--norm"), ("train", "--amp"), ("colorize", "--codec"),
        ("lineart", "--codec"), ("assemble", "--codec"), ("colorize", "--image-format"),
        ("lineart", "--image-format"), ("extract", "--image-format"), ("colorize", "--backend"),
    }  # fmt: skip


@pytest.mark.parametrize(("command", "option", "choices"), _choice_options())
def test_every_choice_option_lists_its_values_and_refuses_others(
    command, option, choices, capsys, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "300")
    assert main([command, "--help"]) == 0
    assert f"<{'|'.join(choices)}>" in capsys.readouterr().out
    assert main([command, option, "bogus"]) == 2
    err = capsys.readouterr().err
    assert "'bogus' is not one of " + ", ".join(repr(c) for c in choices) in err


def test_choice_lists_are_the_library_owners():
    from celpaint.color.task import TASKS
    from celpaint.device import Precision
    from celpaint.io.video import X264_PRESETS
    from celpaint.models import zoo
    from celpaint.models.layers import NORM_KINDS
    from celpaint.training import config, data

    assert get_args(Precision) == options.PRECISIONS
    from celpaint.pipeline.colorizer import BACKENDS

    assert options.BACKENDS == BACKENDS
    assert options.X264_PRESETS == X264_PRESETS
    assert tuple(zoo.shipped_models()) == options.SHIPPED_MODELS
    assert config.choices("model") == tuple(TASKS)
    assert config.choices("norm") == NORM_KINDS
    # The data options are DataSpec's, which checks them with the config's types.
    hints = get_type_hints(data.DataSpec)
    assert (hints["match"], hints["aligned_order"], hints["on_error"]) == (
        config.MatchMode,
        config.AlignedOrder,
        config.OnError,
    )


def test_literal_defaults_are_the_library_defaults():
    from celpaint.models import zoo
    from celpaint.ops.lineart import DEFAULT_PARAMS
    from celpaint.ops.temporal import TemporalParams
    from celpaint.training.losses import RECIPES

    assert options.DEFAULT_MODEL == zoo.DEFAULT_MODEL and options.AUTO == zoo.AUTO
    assert (
        TemporalParams.strength,
        TemporalParams.scene_threshold,
    ) == (colorize.TEMPORAL_STRENGTH, colorize.SCENE_THRESHOLD)
    assert (
        DEFAULT_PARAMS.sigma,
        DEFAULT_PARAMS.epsilon,
        DEFAULT_PARAMS.phi,
    ) == (lineart.SIGMA, lineart.EPSILON, lineart.PHI)
    pixel = ", ".join(f"{recipe.pixel} for {name}" for name, recipe in RECIPES.items())
    assert pixel == train.PIXEL_LOSS_DEFAULT
    assert {f"{recipe.pixel_weight:g}" for recipe in RECIPES.values()} == {
        train.PIXEL_WEIGHT_DEFAULT
    }
