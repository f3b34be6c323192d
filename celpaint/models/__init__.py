"""Networks, their registry and the checkpoint format. Pure torch: no cv2, no ffmpeg."""

# Importing the architecture modules registers them with the registry.
from celpaint.models import patchgan, unet  # noqa: F401
from celpaint.models.checkpoint import ModelConfig, load_model, read_config, save_model
from celpaint.models.registry import available, build, register

__all__ = [
    "ModelConfig",
    "available",
    "build",
    "load_model",
    "read_config",
    "register",
    "save_model",
]
