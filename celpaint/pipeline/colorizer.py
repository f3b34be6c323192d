"""Colorizer: a loaded generator on a device, turning RGB frames into colored RGB frames."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from celpaint.color import array as color_array
from celpaint.color.task import Task
from celpaint.device import is_out_of_memory, resolve_device, resolve_precision, usable_cores
from celpaint.errors import InputError, ProcessingError
from celpaint.models import onnx, zoo
from celpaint.models.checkpoint import ModelConfig, load_model
from celpaint.ops import upsample
from celpaint.ops.geometry import WorkGeometry, resize_to_work
from celpaint.ops.regions import flat_fill
from celpaint.ops.temporal import TemporalParams, TemporalSmoother

log = logging.getLogger("celpaint")
# The most --saturation multiplies the model's colors by; beyond it nearly every color leaves
# the sRGB gamut.
MAX_SATURATION = 4.0
# What runs the generator (--backend): ``auto`` chooses with ``choose_backend``.
BACKENDS = ("auto", "torch", "onnxruntime")


@dataclass(frozen=True)
class ColorizeOptions:
    """What is done to the frames of a clip besides the generator (how outputs are written is
    ``celpaint.io.sinks.EncodeOptions``; the work size and batch size are the ``Colorizer``'s).

    Attributes:
        temporal: smooth colors over time with these settings (``TemporalParams`` checks its
            own ranges), in clips only: videos and folders of several frames, never single
            images; scene cuts and the start of every input reset it. None: each frame on its
            own (``--no-temporal``).
        flat_fill: give each closed region between the input's lines one color.
    """

    temporal: TemporalParams | None = field(default_factory=TemporalParams)
    flat_fill: bool = False


def choose_device(device: str | torch.device, precision: str) -> tuple[torch.device, torch.dtype]:
    """``--device`` and ``--precision`` resolved (``celpaint.device``).

    Raises:
        InputError: a device that is not there, or a precision it cannot run.
    """
    try:
        resolved = resolve_device(device)
        return resolved, resolve_precision(precision, resolved)
    except ValueError as error:
        raise InputError(str(error)) from None


def choose_backend(
    backend: str, device: torch.device, dtype: torch.dtype, compiled: bool, model: nn.Module
) -> str:
    """``--backend`` resolved to ``torch`` or ``onnxruntime``.

    ``auto`` picks ONNX Runtime where it was measured faster: on the CPU, in float32, without
    ``--compile``, for a network of a class in ``models.onnx.FASTER_ON_CPU``, when the
    ``celpaint[onnx]`` extra is installed; PyTorch otherwise (always on GPUs). Why:
    docs/design.md#onnx-export-and-the-onnx-runtime-backend.

    Raises:
        InputError: an unknown backend; ``onnxruntime`` off the CPU, in another precision than
            fp32, with ``--compile``, or without the extra installed (the message says how to
            install it).
    """
    if backend not in BACKENDS:
        raise InputError(f"--backend {backend!r} is unknown; use {', '.join(BACKENDS)}")
    fits = device.type == "cpu" and dtype == torch.float32 and not compiled
    if backend == "auto":
        faster = fits and isinstance(model, onnx.FASTER_ON_CPU)
        return "onnxruntime" if faster and onnx.onnxruntime_installed() else "torch"
    if backend == "onnxruntime":
        if not fits:
            raise InputError(
                "--backend onnxruntime runs in fp32 on the CPU without --compile; use "
                "--device cpu --precision fp32, or --backend torch"
            )
        onnx.require_onnxruntime()
    return backend


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
        saturation: multiplies the model's calibrated ``chroma_scale``, 0..4: 1 paints the
            calibrated colors, 0 none at all (the input's L* for a*b* models, the predicted L*
            for RGB models), 2 twice their chroma.
        backend: what runs the generator: ``torch``, ``onnxruntime`` (an ONNX Runtime session
            over the model's ONNX export, cached on first use: ``models.onnx.open_session``,
            with the threads of one forward pass of ``generator_workers``) or ``auto``
            (``choose_backend``). Pre- and post-processing and batching are the same.

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
        saturation: float = 1.0,
        backend: str = "auto",
    ):
        if not 0.0 <= saturation <= MAX_SATURATION:
            raise InputError(f"--saturation must be within 0..{MAX_SATURATION:g}, got {saturation}")
        self.saturation = float(saturation)
        self.config = config
        self.device, self.dtype = choose_device(device, precision)
        self.work_size = int(work_size or config.work_size)
        self.check_work_size(self.work_size)
        if batch_size is not None and batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {batch_size}")
        self.batch_size = batch_size or self._default_batch_size()
        model = model.to(self.device).eval()
        if self.dtype != torch.float32:
            model = model.to(self.dtype)
        # Channels-last suits cuDNN's tensor-core kernels and oneDNN's CPU convolutions alike
        # (docs/design.md#the-generator-stage).
        model = model.to(memory_format=torch.channels_last)
        self.compiled = compile
        self.model = torch.compile(model) if compile else model
        self.backend = choose_backend(backend, self.device, self.dtype, compile, model)
        self.session = None
        if self.backend == "onnxruntime":
            self.session = self._open_session(cache=True)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike = zoo.DEFAULT_MODEL, **kwargs
    ) -> Colorizer:
        """Load a shipped model by name, or a checkpoint (or training run) directory."""
        model, config = load_model(zoo.generator_directory(name_or_path))
        return cls(model, config, **kwargs)

    def _open_session(self, cache: bool):
        # One forward pass's threads, as the pipeline runs them (generator_workers).
        _, threads = generator_workers(self)
        return onnx.open_session(self.model, self.config, threads or usable_cores(), cache)

    def weights_changed(self) -> None:
        """Call after changing the model's weights in place (``pipeline.reference.adapt``):
        the ONNX Runtime backend exports them again, in memory (not into the cache)."""
        if self.session is not None:
            self.session = self._open_session(cache=False)

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
    def task(self) -> Task:
        """The model variant (what the network sees and predicts)."""
        return self.config.task

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

    def stream(self, options: ColorizeOptions | None = None) -> FrameStream:
        """A stateful transform that colorizes one clip, batch after batch (see ``FrameStream``).

        Args:
            options: smoothing and flat fill (``ColorizeOptions``); None colorizes each frame
                on its own.
        """
        return FrameStream(self, options or ColorizeOptions(temporal=None))

    @torch.inference_mode()
    def colorize(self, frames: np.ndarray) -> np.ndarray:
        """Colorize uint8 RGB frames ``(B, H, W, 3)``; returns uint8 RGB ``(B, H, W, 3)``.

        Each frame is colorized on its own (no temporal smoothing: the frames need not be a
        clip); use ``stream`` for clips.
        """
        return FrameStream(self, ColorizeOptions(temporal=None))(frames)

    @torch.inference_mode()
    def predict_work_lab(self, rgb: torch.Tensor, geometry: WorkGeometry) -> np.ndarray:
        """Run the generator; returns float32 L*a*b* ``(B, h, w, 3)`` at the work size on the CPU.

        Args:
            rgb: the frames already at the work size (``to_tensor``; gray ``(B, 1, h, w)``
                for line-art models), as ``FrameStream.predict`` prepares them.
            geometry: their ``geometry`` (not scaled).

        In OpenCV's convention (``color.array``), which the smoothing and the native
        rendering use (``Task.to_lab``). a*b* are multiplied by the model's calibrated
        ``chroma_scale`` times ``saturation``.
        """
        source = self.network_input(rgb, geometry)
        crop = (..., slice(0, geometry.work_height), slice(0, geometry.work_width))
        output = self.run_generator(source)[crop]
        lab = self.task.to_lab(output, source[crop])
        chroma_scale = self.config.chroma_scale * self.saturation
        if chroma_scale != 1.0:
            # One per-channel multiply over the batch as a tall image: several times faster
            # than numpy's on the strided a*b* view.
            tall = lab.reshape(-1, lab.shape[2], 3)
            cv2.multiply(tall, (1.0, chroma_scale, chroma_scale), dst=tall)
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
        source = self.task.to_network(rgb)
        pad_bottom = geometry.padded_height - geometry.work_height
        pad_right = geometry.padded_width - geometry.work_width
        if pad_bottom or pad_right:
            # Replicate the border: zeros would read as a black frame edge (a line) to the model.
            source = F.pad(source, (0, pad_right, 0, pad_bottom), mode="replicate")
        return source

    def _forward(self, source: torch.Tensor) -> torch.Tensor:
        if self.session is not None:
            feed = {onnx.INPUT_NAME: np.ascontiguousarray(source.numpy())}
            return torch.from_numpy(self.session.run([onnx.OUTPUT_NAME], feed)[0])
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
                if not is_out_of_memory(error):
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

    def __init__(self, colorizer: Colorizer, options: ColorizeOptions):
        self.colorizer = colorizer
        self.work_size = colorizer.work_size
        self.flat_fill = options.flat_fill
        # Where the output L* comes from: a*b* models keep the input's; RGB models predict it.
        self.keeps_input_lightness = colorizer.task.keeps_input_lightness
        self.smoother = None
        temporal = options.temporal
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
        lineart = colorizer.task.reads_gray
        work_frames = frames
        if lineart:
            work_frames = np.stack([color_array.to_gray(frame) for frame in frames])
        if geometry.scaled:
            # Scale down on the CPU before anything else: area averaging keeps thin lines
            # visible, is far cheaper than torch's antialiased resize of the float frame, and
            # only work-size frames travel to the device.
            work_frames = np.stack([resize_to_work(frame, self.work_size) for frame in work_frames])
            geometry = colorizer.geometry(geometry.work_height, geometry.work_width, self.work_size)
        if lineart:
            work_grays, network_frames = work_frames, work_frames[..., None]
        else:
            work_grays = np.stack([color_array.to_gray(frame) for frame in work_frames])
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
        # are kept: drawing the input's over them imports the input's own line flicker
        # (docs/design.md#the-generator-stage).
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
                out[index] = self.render(frame, work_lab[index], darken)
            return out
        with concurrent.futures.ThreadPoolExecutor(workers, "celpaint-render") as pool:
            rendered = pool.map(self.render, frames, work_lab, [darken] * len(frames))
            for index, rgb in enumerate(rendered):
                out[index] = rgb
        return out

    def render(self, frame: np.ndarray, lab: np.ndarray, darken: bool) -> np.ndarray:
        """One frame: the native input uint8 ``(H, W, 3)`` and its (smoothed) L*a*b*
        prediction float32 ``(h, w, 3)`` at the work size -> native uint8 RGB."""
        keep_input = self.keeps_input_lightness
        # The input's L* guides the upsampling, is the output's (a*b* models) or draws its
        # lines (darken); an RGB model's frame at its own size needs none of that.
        needs_l = keep_input or darken or lab.shape[:2] != frame.shape[:2]
        native_l = color_array.lightness(frame) if needs_l else None
        if keep_input:
            luminance = "input"
        else:
            # Flat fill goes before the lines are drawn: the anti-aliased edge of a line keeps
            # its own shade instead of taking the region's.
            luminance = "darken" if darken and not self.flat_fill else "predicted"
        native = upsample.to_native(lab, frame, luminance, native_l=native_l)
        if self.flat_fill:
            gray = color_array.to_gray(frame)
            if keep_input:
                native[..., 1:] = flat_fill(gray, np.ascontiguousarray(native[..., 1:]))
            else:
                native = flat_fill(gray, native)
            if darken:
                native = upsample.darken(native, native_l)
        # Gamut fitting keeps L* exact where that is promised (a*b* models); an RGB model's
        # colors are in gamut to begin with, and darkening keeps them so.
        return color_array.lab_to_rgb(native, fit_gamut=keep_input)
