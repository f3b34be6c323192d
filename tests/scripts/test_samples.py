"""The committed samples are what samples/README.md and MANIFEST.json say they are."""

import json
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from celpaint.io.frames import list_images
from celpaint.io.media import probe
from celpaint.ops.lineart import LineArtParams, xdog
from tests.helpers import audio_stream_count, stream_duration

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
pytestmark = pytest.mark.skipif(
    not (SAMPLES / "MANIFEST.json").is_file(), reason="samples/ not generated"
)


def test_manifest_lists_existing_files_and_sources():
    manifest = json.loads((SAMPLES / "MANIFEST.json").read_text())
    for name in manifest["files"]:
        assert (SAMPLES / name).is_file(), name
    roles = {entry["role"] for entry in manifest["sources"]}
    assert roles == {"character", "background"} and len(manifest["sources"]) >= 4
    total = sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file())
    assert total < 5 * 2**20  # a few MB in the repository


@pytest.mark.parametrize("kind", ["color", "lineart", "gray"])
def test_clips_are_4s_24fps_384x216_with_audio(kind, ffmpeg):
    clip = SAMPLES / f"clip_{kind}.mp4"
    info = probe(clip, ffmpeg)
    assert (info.width, info.height, info.fps, info.frame_count) == (384, 216, Fraction(24), 96)
    assert audio_stream_count(clip, ffmpeg) == 1
    assert abs(stream_duration(clip, ffmpeg, "0:a:0") - 4.0) < 0.05


def test_pairs_match_and_sketch_is_the_line_art_of_color():
    manifest = json.loads((SAMPLES / "MANIFEST.json").read_text())
    params = LineArtParams(**{k: v for k, v in manifest["line_art"].items() if k != "method"})
    colors, sketches = (
        list_images(SAMPLES / "pairs" / "color"),
        list_images(SAMPLES / "pairs" / "sketch"),
    )
    assert [p.name for p in colors] == [p.name for p in sketches] and len(colors) == 32
    color = cv2.cvtColor(cv2.imread(str(colors[5])), cv2.COLOR_BGR2RGB)
    sketch = cv2.imread(str(sketches[5]), cv2.IMREAD_UNCHANGED)
    assert sketch.shape == (216, 384) and color.shape == (216, 384, 3)
    np.testing.assert_array_equal(sketch, xdog(color, params))
