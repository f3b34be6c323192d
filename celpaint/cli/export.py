"""`celpaint export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from celpaint.cli.options import Overwrite, Quiet


def export_command(
    model: Annotated[
        str,
        typer.Argument(help="Shipped model name or checkpoint directory.", show_default=False),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The .onnx file to write.", show_default=False)
    ],
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Export a model to ONNX (dynamic batch, height and width; its config in the metadata),
    checked against PyTorch. Needs: pip install "celpaint\\[onnx]"."""
    from celpaint.models.onnx import export_model

    report = export_model(model, output, overwrite=overwrite)
    if not quiet:
        typer.echo(
            f"exported {model} to {report.path} (ONNX Runtime within "
            f"{report.max_difference:.1e} of PyTorch)",
            err=True,
        )
