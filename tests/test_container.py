"""The .gac container: round trip, info figures, and refusal of damaged files."""

from __future__ import annotations

import numpy as np
import pytest

from gacflow import container
from gacflow.bitstream import SILENT
from gacflow.errors import BitstreamError
from gacflow.tokens import Tokens


def _tokens(n: int = 750, mode: str = "275") -> Tokens:
    ids = np.random.default_rng(0).integers(0, 1024 if mode == "275" else 64, n)
    ids[10:20] = SILENT
    return Tokens(ids, mode, "gacflow-test-12345678", num_samples=n * 640 - 100)


@pytest.mark.parametrize("mode,width,limit", [("275", 10, 275), ("175", 6, 175)])
def test_round_trip_and_bitrate_of_30s(mode: str, width: int, limit: int) -> None:
    t = _tokens(750, mode)
    t.ids[t.ids == SILENT] = 5  # bitrate budget is for continuous speech (no DTX savings)
    data = container.dumps(t, width)
    back, info = container.loads(data, codec_id=t.codec_id)
    np.testing.assert_array_equal(back.ids, t.ids)
    assert (back.mode, back.codec_id, back.num_samples) == (mode, t.codec_id, t.num_samples)
    # the file names its codec by a 13-bit reference: a reader holding another codec
    # sees an unknown codec (and `gacflow decode` refuses it by name)
    assert container.loads(data, codec_id="another-codec")[0].codec_id.startswith("<unknown")
    assert info.duration == pytest.approx(30.0)
    assert info.bitrate <= limit


def test_dtx_frames_survive() -> None:
    t = _tokens(100)
    back, _ = container.loads(container.dumps(t, 10))
    assert (back.ids == SILENT).sum() == 10


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b"RIFF" + b[4:], "magic"),
        (lambda b: bytes([0xA9]) + b[1:], "version 9"),
        (lambda b: b[:-3], "truncated"),
        (lambda b: b[:20], "truncated"),
        (lambda b: b[:3], "truncated"),
        (lambda b: b + b"\x00" * 5, "after its end-of-stream"),
        (lambda b: b[:6] + bytes([b[6] ^ 0x10]) + b[7:], "corrupt"),
    ],
)
def test_damaged_files_refused(mutate, message) -> None:
    data = container.dumps(_tokens(100), 10)
    with pytest.raises(BitstreamError, match=message):
        container.loads(mutate(data))
