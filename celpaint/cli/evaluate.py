"""`celpaint evaluate`."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from celpaint.cli.options import FFmpeg, MaxPixels, Quiet, max_pixels

# Per-frame rows are shown for short inputs; longer ones show the mean (and the JSON has all).
_FRAME_ROWS = 30


def _number(value: float, digits: int) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def _row(values: dict) -> list[str]:
    return [
        _number(values["psnr"], 2),
        _number(values["ssim"], 4),
        _number(values["ciede2000"], 3),
        f"{values['accuracy'] * 100:.2f}",
        _number(values["colorfulness"], 1),
        _number(values["colorfulness_truth"], 1),
    ]


def _ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _warping(value: float | None) -> str:
    # Errors of a few 1e-4 are typical: scientific notation keeps their digits.
    return "-" if value is None or math.isnan(value) else f"{value:.3e}"


def _write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=2) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
        return
    from celpaint.io.frames import write_text

    write_text(path, text)


def evaluate_command(
    prediction: Annotated[
        Path, typer.Argument(help="Colorized clip, frame folder or image.", show_default=False)
    ],
    ground_truth: Annotated[
        Path, typer.Argument(help="Ground-truth clip, frame folder or image.", show_default=False)
    ],
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Write per-frame and mean results as JSON (- for stdout)."),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold",
            help="Pixel accuracy: L*, a*, b* within this share of their range (L* 100, a*b* 255).",
        ),
    ] = 0.05,
    frames: Annotated[
        bool, typer.Option("--frames", help="List every frame in the table, however many.")
    ] = False,
    input: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="The clip that was colorized: adds the temporal warping error (Lai et al. "
            "2018; flow on this clip) of the prediction and of the ground truth, on RGB and "
            "on a*b* alone.",
        ),
    ] = None,
    ffmpeg: FFmpeg = None,
    pixel_limit: MaxPixels = None,
    quiet: Quiet = False,
) -> None:
    """Compare a colorized clip or frame folder with its ground truth, frame by frame: PSNR,
    SSIM, mean CIEDE2000, pixel accuracy and colorfulness (Hasler & Suesstrunk; the
    prediction's and the truth's); with --input, the temporal warping error."""
    from celpaint.cli.progress import stderr_console
    from celpaint.evaluation.compare import evaluate

    to_stdout = json_path is not None and str(json_path) == "-"
    console = stderr_console()
    bar = Progress(
        TextColumn("comparing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=True,
    )
    with bar:
        task = bar.add_task("compare", total=None)

        def report(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = evaluate(
            prediction, ground_truth, threshold, ffmpeg, report, input=input,
            max_pixels=max_pixels(pixel_limit), output=None if to_stdout else json_path,
        )  # fmt: skip

    if json_path is not None:
        _write_json(json_path, result.to_dict())
    if quiet or to_stdout:
        return
    table = Table(title=f"{prediction} vs {ground_truth}", title_justify="left")
    table.add_column("frame")
    warping = result.warping_error
    columns = ["PSNR (dB)", "SSIM", "dE2000", "accuracy (%)", "colorfulness", "truth's"]
    if warping is not None:
        columns += ["warping error", "truth's"]
    for name in columns:
        table.add_column(name, justify="right")
    if frames or len(result.frames) <= _FRAME_ROWS:
        for row in result.frames:
            extra = []
            if warping is not None:
                extra = [_warping(row["warping_error"]), _warping(row["warping_error_truth"])]
            table.add_row(row["name"], *_row(row), *extra)
        table.add_section()
    extra = []
    if warping is not None:
        extra = [_warping(warping["prediction"]), _warping(warping["ground_truth"])]
    table.add_row(f"mean of {len(result.frames)}", *_row(result.mean), *extra, style="bold")
    stdout = Console()
    stdout.print(table)
    mean = result.mean
    stdout.print(
        f"colorfulness: {_number(mean['colorfulness'], 1)}, the ground truth's "
        f"{_number(mean['colorfulness_truth'], 1)}: ratio {_ratio(mean['colorfulness_ratio'])}"
    )
    if warping is not None:
        warping_ab = result.warping_error_ab
        stdout.print(
            f"warping error (flow on {input}): {_warping(warping['prediction'])}; the ground "
            f"truth's, the floor: {_warping(warping['ground_truth'])}"
        )
        stdout.print(
            f"a*b* warping error: {_warping(warping_ab['prediction'])}; the ground truth's: "
            f"{_warping(warping_ab['ground_truth'])}"
        )
