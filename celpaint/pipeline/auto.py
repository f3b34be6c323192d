"""Which model colorizes which input: ``--model auto`` picks a shipped model per input, and an
explicit model is checked against what each input looks like.

A look at an input's first frames (``ops.lineart.guess_input_kind``) says whether it is line
art or footage (gray or in color). With ``AutoColorizer`` that picks the shipped model for it
(``models.zoo.model_for``); with a given ``Colorizer`` a mismatch (the line-art model on
footage, or the reverse, whose colors come out washed out) is a warning and nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from celpaint.errors import CelpaintError
from celpaint.models import zoo
from celpaint.ops.lineart import guess_input_kind
from celpaint.pipeline.colorizer import Colorizer, choose_device
from celpaint.pipeline.jobs import Job

log = logging.getLogger("celpaint")

# Frames looked at per input: enough to see past a blank first frame, cheap to decode.
HEAD_FRAMES = 5
_LOOKS = {
    "lineart": "looks like line art",
    "grayscale": "looks like grayscale or color footage",
    None: "blank first frames",
}


class AutoColorizer:
    """The shipped model that fits each input, each loaded at most once, all with one set of
    settings (``--model auto``). The arguments are ``Colorizer``'s.

    Raises:
        InputError: a device that is not there, or a precision it cannot run (on
            construction; the other settings are checked when a model is loaded, which
            ``colorize`` does before any work).
    """

    def __init__(
        self,
        device: str = "auto",
        precision: str = "auto",
        work_size: int | None = None,
        batch_size: int | None = None,
        compile: bool = False,
        saturation: float = 1.0,
        backend: str = "auto",
    ):
        self.device, _ = choose_device(device, precision)
        # Colorizer's settings, the same for every model loaded.
        self._settings = dict(
            device=self.device, precision=precision, work_size=work_size,
            batch_size=batch_size, compile=compile, saturation=saturation, backend=backend,
        )  # fmt: skip
        self._loaded: dict[str, Colorizer] = {}

    def colorizer(self, name: str) -> Colorizer:
        """The shipped model ``name`` as a ``Colorizer``, loaded on first use."""
        if name not in self._loaded:
            self._loaded[name] = Colorizer.from_pretrained(name, **self._settings)
        return self._loaded[name]


@dataclass(frozen=True)
class Choice:
    """The model for one input and what the input looked like."""

    model: str
    looks: str


def choose(
    jobs: Sequence[Job], colorizer: Colorizer | AutoColorizer, keep_going: bool = False
) -> dict[int, Colorizer]:
    """The colorizer of every runnable job (``Job.runnable``), by its index in ``jobs``.

    Each input's first ``HEAD_FRAMES`` frames are looked at. With an ``AutoColorizer`` the
    model that fits is loaded (each at most once) and named in ``Job.model`` and an info
    log line; with a ``Colorizer`` an input that does not fit its model is a warning.

    Raises:
        InputError, ProcessingError: an input whose first frames cannot be decoded (with
            ``keep_going`` it becomes the job's ``error`` instead), or a model that cannot
            be loaded with the settings.
    """
    chosen: dict[int, Colorizer] = {}
    for index, job in enumerate(jobs):
        if not job.runnable:
            continue
        try:
            kind = guess_input_kind(job.source.head(HEAD_FRAMES))
        except CelpaintError as error:
            if not keep_going:
                raise
            job.error = str(error)
            job.source.close()
            job.source = None
            continue
        if isinstance(colorizer, AutoColorizer):
            name = zoo.model_for(kind)
            job.model = f"{name} ({_LOOKS[kind]})"
            log.info("%s %s: colorizing with the %s model", job.input, _LOOKS[kind], name)
            chosen[index] = colorizer.colorizer(name)
        else:
            _warn_if_unfit(job, kind, colorizer)
            chosen[index] = colorizer
    return chosen


def _warn_if_unfit(job: Job, kind: str | None, colorizer: Colorizer) -> None:
    expects = colorizer.task.input_kind
    if kind is None or kind == expects:
        return
    log.warning(
        "%s %s but the model expects %s, so its colors will be washed out; use --model %s "
        "(or auto)",
        job.input, _LOOKS[kind], "line art" if expects == "lineart" else "grayscale footage",
        zoo.model_for(kind),
    )  # fmt: skip
