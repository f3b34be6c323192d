"""celpaint: colorize line-art and black-and-white animation.

The public API::

    from celpaint import Colorizer, ColorizeOptions, EncodeOptions, colorize, load_model

    colorizer = Colorizer.from_pretrained("lineart", device="auto")
    colorize(["clip.mp4"], "clip_color.mp4", colorizer, encode=EncodeOptions(crf=16))
"""

import importlib

__version__ = "0.1.0"

from celpaint.errors import CelpaintError, CheckpointError, InputError, ProcessingError  # noqa: E402

__all__ = [
    "AutoColorizer",
    "CelpaintError",
    "CheckpointError",
    "Colorizer",
    "ColorizeOptions",
    "EncodeOptions",
    "InputError",
    "ModelConfig",
    "ProcessingError",
    "TemporalParams",
    "__version__",
    "colorize",
    "colorize_clip",
    "convert",
    "extract_line_art",
    "load_model",
    "save_model",
]

# Everything but the errors pulls in torch, OpenCV or ffmpeg helpers: it is imported only when
# asked for, so that importing any part of celpaint (the CLI's --help above all) stays fast.
_LAZY = {
    "AutoColorizer": "celpaint.pipeline.auto",
    "ModelConfig": "celpaint.models.checkpoint",
    "load_model": "celpaint.models.checkpoint",
    "save_model": "celpaint.models.checkpoint",
    "Colorizer": "celpaint.pipeline.colorizer",
    "ColorizeOptions": "celpaint.pipeline.colorizer",
    "EncodeOptions": "celpaint.io.sinks",
    "TemporalParams": "celpaint.ops.temporal",
    "colorize": "celpaint.pipeline.api",
    "colorize_clip": "celpaint.pipeline.reference",
    "convert": "celpaint.pipeline.api",
    "extract_line_art": "celpaint.pipeline.api",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'celpaint' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
