"""Colorizer: a loaded generator on a device, turning RGB frames into colored RGB frames."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from celpaint import color
from celpaint.errors import InputError, ProcessingError
from celpaint.models import zoo
from celpaint.models.checkpoint import ModelConfig, load_model
from celpaint.pipeline import upsample
from celpaint.pipeline.flow import to_gray
from celpaint.pipeline.temporal import TemporalParams, TemporalSmoother, flat_fill

log = logging.getLogger("celpaint")

Precision = Literal["auto", "fp32", "fp16", "bf16"]
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; explicit devices are checked."""
    text = str(device)
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(text)
    except RuntimeError:
        raise InputError(
            f"--device {text!r} is not a device; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {text}: no CUDA GPU is available; use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InputError(
                f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) are present"
            )
    elif resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(f"--device {text}: Apple MPS is not available; use --device cpu")
    elif resolved.type != "cpu":
        raise InputError(f"--device {text!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """``auto`` is fp16 on CUDA (where it is about twice as fast) and fp32 elsewhere."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision not in _DTYPES:
        raise InputError(f"--precision {precision!r} is unknown; use auto, fp32, fp16 or bf16")
    if precision == "fp16" and device.type == "cpu":
        raise InputError("--precision fp16 needs a GPU; on the CPU use fp32 (or bf16)")
    return _DTYPES[precision]


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error)
    )


@dataclass
class WorkGeometry:
    """How a ``height x width`` frame is fitted to the network.

    The frame is scaled to ``work_height x work_width`` (never up) and padded on the right and
    bottom to ``padded_height x padded_width``, multiples of the network's size multiple.
    """

    height: int
    width: int
    work_height: int
    work_width: int
    padded_height: int
    padded_width: int

    @classmethod
    def fit(cls, height: int, width: int, work_size: int, multiple: int) -> WorkGeometry:
        work_height, work_width = upsample.work_shape(height, width, work_size)
        padded = upsample.padded_shape(work_height, work_width, multiple)
        return cls(height, width, work_height, work_width, *padded)

    @property
    def scaled(self) -> bool:
        return (self.work_height, self.work_width) != (self.height, self.width)


class Colorizer:
    """A generator ready to colorize frames.

    Args:
        model: the generator (see ``celpaint.models``); moved to ``device`` here.
        config: its ``ModelConfig`` (input kind, output kind, size multiple, work size).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``auto`` (fp16 on CUDA, else fp32), ``fp32``, ``fp16`` or ``bf16``.
        work_size: long side the network sees; larger frames are scaled down for the network
            only. Defaults to the model's ``work_size``.
        batch_size: frames per forward pass; None picks one for the device. On CUDA an
            out-of-memory error halves it and retries the same frames.
        compile: wrap the generator in ``torch.compile``.

    Call ``colorize(frames)`` with uint8 RGB ``(B, H, W, 3)`` frames; it returns colored frames
    of the same shape. For a grayscale (L*a*b*) model the output keeps the input's L* exactly
    (up to 8-bit rounding).
    """

    def __init__(
        self,
        model: nn.Module,
        config: ModelConfig,
        device: str | torch.device = "auto",
        precision: str = "auto",
        work_size: int | None = None,
        batch_size: int | None = None,
        compile: bool = False,
    ):
        self.config = config
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.work_size = int(work_size or config.work_size)
        self.check_work_size(self.work_size)
        if batch_size is not None and batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {batch_size}")
        self.batch_size = batch_size or self._default_batch_size()
        model = model.to(self.device).eval()
        if self.dtype != torch.float32:
            model = model.to(self.dtype)
        # Channels-last suits cuDNN's tensor-core kernels and oneDNN's CPU convolutions alike:
        # measured on 2 CPU cores, it cuts the generator's time by about 30%.
        model = model.to(memory_format=torch.channels_last)
        self.compiled = compile
        self.model = torch.compile(model) if compile else model

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike = zoo.DEFAULT_MODEL, **kwargs
    ) -> Colorizer:
        """Load a shipped model by name, or a checkpoint (or training run) directory."""
        model, config = load_model(zoo.generator_directory(name_or_path))
        return cls(model, config, **kwargs)

    def _default_batch_size(self) -> int:
        if self.device.type != "cuda":
            return 4
        free, _ = torch.cuda.mem_get_info(self.device)
        pixels = self.work_size * self.work_size
        # About 1 kB of activations per pixel per frame in half precision for our U-Nets;
        # a wrong guess only costs one halving through the out-of-memory backoff.
        per_frame = pixels * 1024 * (2 if self.dtype != torch.float32 else 4) // 2
        return int(max(1, min(64, free * 0.5 // per_frame)))

    @property
    def input_kind(self) -> str:
        return self.config.input_kind

    def geometry(self, height: int, width: int, work_size: int | None = None) -> WorkGeometry:
        """How a ``height x width`` frame is fitted to the network (at ``work_size``, by
        default the colorizer's)."""
        return WorkGeometry.fit(
            height, width, work_size or self.work_size, self.config.size_multiple
        )

    def check_work_size(self, work_size: int) -> None:
        """Raise ``InputError`` unless the network can run at ``work_size``."""
        if work_size < self.config.size_multiple:
            raise InputError(
                f"--work-size {work_size} is smaller than the model's size multiple "
                f"({self.config.size_multiple}); use {self.config.size_multiple} or more"
            )

    def stream(
        self,
        temporal: TemporalParams | None = None,
        flat_fill: bool = False,
        work_size: int | None = None,
    ) -> FrameStream:
        """A stateful transform that colorizes one clip, batch after batch (see ``FrameStream``).

        Args:
            temporal: smooth chroma over time with these settings; None colorizes each frame
                on its own (images, or ``--no-temporal``).
            flat_fill: give each closed region between the input's lines one color.
            work_size: long side the network sees; the colorizer's when None.
        """
        return FrameStream(self, temporal, flat_fill, work_size)

    @torch.inference_mode()
    def colorize(self, frames: np.ndarray) -> np.ndarray:
        """Colorize uint8 RGB frames ``(B, H, W, 3)``; returns uint8 RGB ``(B, H, W, 3)``.

        Each frame is colorized on its own (no temporal smoothing: the frames need not be a
        clip); use ``stream`` for clips.
        """
        return FrameStream(self)(frames)

    @torch.inference_mode()
    def predict_work_lab(self, rgb: torch.Tensor, geometry: WorkGeometry) -> np.ndarray:
        """Run the generator; returns float32 L*a*b* ``(B, h, w, 3)`` at the work size on the CPU.

        Args:
            rgb: the frames already at the work size (``to_tensor``; gray ``(B, 1, h, w)``
                for line-art models), as ``FrameStream.predict`` prepares them.
            geometry: their ``geometry`` (not scaled).

        In OpenCV's convention (``upsample.rgb_to_lab``), which the smoothing and the native
        rendering use. For ``ab`` models L* is the input's. a*b* are multiplied by the
        model's calibrated ``chroma_scale``.
        """
        source = self.network_input(rgb, geometry)
        output = self.run_generator(source)[..., : geometry.work_height, : geometry.work_width]
        if self.config.output == "rgb":
            frames = color.denormalize_unit(output).permute(0, 2, 3, 1).contiguous().cpu().numpy()
            # The conversion is per pixel, so the batch goes through as one tall image: no
            # per-frame calls and no copy to stack them.
            batch, height, width = frames.shape[:3]
            tall = frames.reshape(batch * height, width, 3)
            lab = upsample.rgb_to_lab(tall).reshape(batch, height, width, 3)
        else:
            l_channel = color.denormalize_l(
                source[..., : geometry.work_height, : geometry.work_width]
            )
            lab = torch.cat([l_channel, color.denormalize_ab(output)], dim=1)
            lab = lab.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        if self.config.chroma_scale != 1.0:
            # One per-channel multiply over the batch as a tall image: several times faster
            # than numpy's on the strided a*b* view.
            tall = lab.reshape(-1, lab.shape[2], 3)
            cv2.multiply(tall, (1.0, self.config.chroma_scale, self.config.chroma_scale), dst=tall)
        return lab

    def to_tensor(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 ``(B, H, W, C)`` -> float32 ``(B, C, H, W)`` in [0, 1] on the device."""
        tensor = torch.from_numpy(np.ascontiguousarray(frames))
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        else:
            tensor = tensor.to(self.device)
        return tensor.permute(0, 3, 1, 2).float().div_(255.0)

    def network_input(self, rgb: torch.Tensor, geometry: WorkGeometry) -> torch.Tensor:
        """RGB ``(B, 3, h, w)`` at the work size -> the normalised, padded ``(B, 1, h', w')``
        input. A line-art model also takes gray ``(B, 1, h, w)`` frames (Rec. 601 luma)."""
        if geometry.scaled:
            raise ValueError("network_input takes frames already at the work size")
        if self.input_kind == "lineart":
            gray = rgb if rgb.shape[1] == 1 else color.rgb_to_gray(rgb)
            source = color.normalize_unit(gray.clamp(0, 1))
        else:
            source = color.normalize_l(color.rgb_to_lab(rgb)[:, :1])
        pad_bottom = geometry.padded_height - geometry.work_height
        pad_right = geometry.padded_width - geometry.work_width
        if pad_bottom or pad_right:
            # Replicate the border: zeros would read as a black frame edge (a line) to the model.
            source = F.pad(source, (0, pad_right, 0, pad_bottom), mode="replicate")
        return source

    def _forward(self, source: torch.Tensor) -> torch.Tensor:
        source = source.to(self.dtype).contiguous(memory_format=torch.channels_last)
        return self.model(source).float()

    def run_generator(self, source: torch.Tensor) -> torch.Tensor:
        """Forward ``source`` in chunks of ``batch_size``, halving it on out-of-memory errors.

        Each chunk is retried until it succeeds, so no frame is lost or computed twice into
        the output.
        """
        outputs = []
        start = 0
        while start < len(source):
            size = min(self.batch_size, len(source) - start)
            try:
                outputs.append(self._forward(source[start : start + size]))
            except Exception as error:
                if not _is_out_of_memory(error):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if size == 1:
                    raise ProcessingError(
                        f"out of memory on {self.device} even for one frame at work size "
                        f"{self.work_size}; lower --work-size or use --device cpu"
                    ) from None
                self.batch_size = max(1, size // 2)
                log.warning(
                    "out of memory at batch size %d: retrying with %d", size, self.batch_size
                )
                continue
            start += size
        return torch.cat(outputs)


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def render_workers(frames: int) -> int:
    """Threads for rendering ``frames`` frames at the native size: half the usable cores (the
    generator and ffmpeg keep the rest busy), one where there are only two."""
    cores = usable_cores()
    return max(1, min(frames, cores // 2 if cores > 2 else 1))


def generator_workers(colorizer: Colorizer) -> tuple[int, int | None]:
    """How the generator runs in the pipeline: (concurrent forward passes, torch threads
    each, None to leave torch's setting alone).

    On the CPU, two forward passes of one thread each, on different batches, rather than one
    pass on every core: torch splits each operation evenly over its threads and waits for
    the slowest, so whenever smoothing, rendering or ffmpeg take a core from one of them the
    other idles (or spins) until it is back. Single-threaded passes lose nothing to that,
    and the cores go to whichever work is ready. GPUs (and compiled models, whose callers
    must not overlap) keep one pass.
    """
    if colorizer.device.type != "cpu" or colorizer.compiled:
        return 1, None
    cores = usable_cores()
    if cores < 2:
        return 1, None
    return 2, max(1, cores // 2)


class FrameStream:
    """Colorizes the frames of one clip in order, batch after batch, keeping temporal state.

    Per frame: the generator's colors at the work size (L*a*b*), then temporal smoothing
    guided by the input frames (``TemporalSmoother``; scene cuts reset it) of a*b*, and of an
    ``rgb`` model's predicted L* inside regions; then the native size: colors upsampled with
    the native input as the guide, L* exactly the input's (``ab`` models) or the prediction's
    (``rgb`` models; with the input's lines drawn over it when the frame was scaled down),
    optionally one color per closed region (``flat_fill``).

    A stream holds one clip's state: make one per input (``Colorizer.stream``) or call
    ``reset`` between inputs. Results do not depend on how the clip is cut into batches. The
    state is the previous frame at the work size (a few MB), whatever the clip's length.

    Call it with uint8 RGB ``(B, H, W, 3)`` frames; it returns uint8 RGB ``(B, H, W, 3)``.
    """

    def __init__(
        self,
        colorizer: Colorizer,
        temporal: TemporalParams | None = None,
        flat_fill: bool = False,
        work_size: int | None = None,
    ):
        if work_size is not None:
            colorizer.check_work_size(work_size)
        self.colorizer = colorizer
        self.work_size = work_size or colorizer.work_size
        self.flat_fill = flat_fill
        # Where the output L* comes from: a*b* models keep the input's; RGB models predict it.
        self.keeps_input_lightness = colorizer.config.output == "ab"
        self.smoother = None
        if temporal is not None:
            # An RGB model's L* is a prediction that flickers like its chroma: smooth it too
            # (inside regions only; see TemporalParams.lightness).
            lightness = temporal.lightness or not self.keeps_input_lightness
            self.smoother = TemporalSmoother(dataclasses.replace(temporal, lightness=lightness))

    def reset(self) -> None:
        """Start a new clip: nothing carries over from the frames seen so far."""
        if self.smoother is not None:
            self.smoother.reset()

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        if frames.ndim == 3:
            return self(frames[None])[0]
        return self.finish(self.predict(frames))

    def stages(self) -> list[Callable]:
        """``__call__`` in two halves for the streaming pipeline (``run.transform_stages``):
        ``predict`` (the generator) and ``finish`` (smoothing, native size), so that one
        batch is finished on another thread while the generator works on the next."""
        return [self.predict, self.finish]

    @torch.inference_mode()
    def predict(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 RGB ``(B, H, W, 3)`` -> (the frames, the frames at the work size as uint8
        gray ``(B, h, w)``, their L*a*b* prediction float32 ``(B, h, w, 3)``), the input of
        ``finish``."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 (B, H, W, 3) frames, got {frames.dtype} {frames.shape}"
            )
        colorizer = self.colorizer
        geometry = colorizer.geometry(frames.shape[1], frames.shape[2], self.work_size)
        # Gray frames are the smoothing's guide, and all a line-art model sees: one channel to
        # scale, convert and move instead of three (cv2's luma of uint8 RGB is exact for
        # neutral line art and within half a level otherwise). An L*a*b* model takes RGB.
        lineart = colorizer.input_kind == "lineart"
        work_frames = np.stack([to_gray(frame) for frame in frames]) if lineart else frames
        if geometry.scaled:
            # Scale down on the CPU before anything else: area averaging keeps thin lines
            # visible, costs a few ms per 1080p frame (torch's antialiased resize of the
            # float frame costs tens), and only work-size frames travel to the device.
            work_frames = np.stack(
                [upsample.resize_to_work(frame, self.work_size) for frame in work_frames]
            )
            geometry = colorizer.geometry(geometry.work_height, geometry.work_width, self.work_size)
        if lineart:
            work_grays, network_frames = work_frames, work_frames[..., None]
        else:
            work_grays = np.stack([to_gray(frame) for frame in work_frames])
            network_frames = work_frames
        # Every frame takes the same path, smoothed or not, so that --no-temporal (or a
        # frame after a cut) differs from smoothing only by the smoothing.
        work_lab = colorizer.predict_work_lab(colorizer.to_tensor(network_frames), geometry)
        return frames, work_grays, work_lab

    def finish(self, predicted: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """``predict``'s result -> uint8 RGB ``(B, H, W, 3)``; batches must come in order."""
        frames, work_grays, work_lab = predicted
        # Scaled frames of RGB models get the native input's lines drawn over the upsampled
        # colors, so lines stay as crisp as drawn. At the native size the network's own lines
        # are kept: drawing the input's over them gained nothing and imported the input's
        # own flicker (XDoG line art of a panning shot: warping error 1.2e-2, against 7.6e-4
        # for the colored truth), doubling the output's.
        scaled = work_grays.shape[1:3] != frames.shape[1:3]
        darken = scaled and not self.keeps_input_lightness
        # Smoothing carries state from frame to frame, so its blending goes in order (the
        # motion estimates it needs, most of its cost, do not and are spread over threads);
        # rendering at the native size is per frame and the costliest step at 1080p, so it is
        # spread over threads too (cv2 and numpy release the GIL) where there are cores to
        # spare.
        workers = render_workers(len(frames))
        if self.smoother is not None:
            work_lab = self.smoother.process_batch(work_grays, work_lab, workers)
        out = np.empty_like(frames)
        if workers == 1:
            for index, frame in enumerate(frames):
                out[index] = self._render(frame, work_lab[index], darken)
            return out
        with concurrent.futures.ThreadPoolExecutor(workers, "celpaint-render") as pool:
            rendered = pool.map(self._render, frames, work_lab, [darken] * len(frames))
            for index, rgb in enumerate(rendered):
                out[index] = rgb
        return out

    def _render(self, frame: np.ndarray, lab: np.ndarray, darken: bool) -> np.ndarray:
        """One frame: the native input uint8 ``(H, W, 3)`` and its (smoothed) L*a*b*
        prediction float32 ``(h, w, 3)`` at the work size -> native uint8 RGB."""
        keep_input = self.keeps_input_lightness
        # The input's L* guides the upsampling, is the output's (a*b* models) or draws its
        # lines (darken); an RGB model's frame at its own size needs none of that.
        needs_l = keep_input or darken or lab.shape[:2] != frame.shape[:2]
        native_l = upsample.lightness(frame) if needs_l else None
        if keep_input:
            luminance = "input"
        else:
            # Flat fill goes before the lines are drawn: the anti-aliased edge of a line keeps
            # its own shade instead of taking the region's.
            luminance = "darken" if darken and not self.flat_fill else "predicted"
        native = upsample.to_native(lab, frame, luminance, native_l=native_l)
        if self.flat_fill:
            gray = to_gray(frame)
            if keep_input:
                native[..., 1:] = flat_fill(gray, np.ascontiguousarray(native[..., 1:]))
            else:
                native = flat_fill(gray, native)
            if darken:
                native = upsample.darken(native, native_l)
        # Gamut fitting keeps L* exact where that is promised (a*b* models); an RGB model's
        # colors are in gamut to begin with, and darkening keeps them so.
        return upsample.lab_to_rgb(native, fit_gamut=keep_input)
