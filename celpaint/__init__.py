"""celpaint: colorize line-art and black-and-white animation.

The public API::

    from celpaint import Colorizer, colorize, load_model

    colorizer = Colorizer.from_pretrained("lineart", device="auto")
    colorize(["clip.mp4"], "clip_color.mp4", colorizer=colorizer)
"""

__version__ = "0.1.0"

from celpaint.errors import CelpaintError, CheckpointError, InputError, ProcessingError  # noqa: E402
from celpaint.models.checkpoint import ModelConfig, load_model, save_model  # noqa: E402

__all__ = [
    "CelpaintError",
    "CheckpointError",
    "Colorizer",
    "ColorizeOptions",
    "InputError",
    "ModelConfig",
    "ProcessingError",
    "__version__",
    "colorize",
    "load_model",
    "save_model",
]


def __getattr__(name: str):
    # The pipeline pulls in OpenCV and ffmpeg helpers; import it only when asked for, so that
    # `celpaint.models` stays usable (and fast to import) on its own.
    if name == "Colorizer":
        from celpaint.pipeline.colorizer import Colorizer

        return Colorizer
    if name in ("colorize", "ColorizeOptions"):
        from celpaint.pipeline import run

        return getattr(run, name)
    raise AttributeError(f"module 'celpaint' has no attribute {name!r}")
