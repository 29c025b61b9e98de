"""Streaming, batched decoding equals decoding the whole stream at once (real weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gacflow.bitstream import SILENT, Packet
from gacflow.cloud.decoder_service import DecoderService
from gacflow.cloud.streams import StreamTable
from gacflow.tokens import Tokens

torch.set_num_threads(1)


def _sizes() -> list[str]:
    from gacflow.bundle import Bundle

    return sorted(Bundle.load().model_config["decoders"])


@pytest.fixture(scope="module", params=_sizes())
def codec(request):
    """Every decoder size the shipped bundle holds (deeper ones need more context)."""
    from gacflow.model import Codec

    return Codec.from_bundle(decoder=request.param)


@pytest.fixture(scope="module")
def token_sets(codec, speech):
    """Three streams of different lengths, one with DTX frames, one in the 175 mode; with
    the bundle's voice code (None for a codec without one)."""
    tokens = codec.encode(speech[: 16000 * 9])
    ids = tokens.ids
    dtx = ids[:180].copy()
    dtx[60:90] = SILENT
    return [(ids[:225], "275"), (dtx, "275"), (ids[:130] >> 4, "175")], tokens.voice


@pytest.mark.parametrize("blocks", [(2, 6), (4, 12), (1, 1)])
def test_receptive_frames_bounds_what_a_token_changes(blocks):
    """Changing one token frame changes audio only within receptive_frames on each side."""
    from gacflow.model.decoder import Decoder, DecoderConfig

    torch.manual_seed(0)
    cfg = DecoderConfig(dim=32, blocks_low=blocks[0], blocks_high=blocks[1])
    dec = Decoder(cfg, 5).eval()
    for name, p in dec.named_parameters():
        if name.endswith(".scale"):
            p.data.fill_(1.0)  # make every block matter, as after training
    t, at = 80, 40
    codes = torch.rand(1, t, 5) * 2 - 1
    flags = torch.ones(1, t)
    other = codes.clone()
    other[0, at] = -other[0, at]
    with torch.no_grad():
        diff = (dec(codes, flags) - dec(other, flags)).abs().reshape(t, 640).amax(dim=1)
    changed = torch.nonzero(diff > 0).flatten()
    rf = cfg.receptive_frames
    assert changed.min() >= at - rf and changed.max() <= at + rf
    assert changed.max() >= at + rf - 2  # the bound is tight, not just safe


def test_streamed_batched_output_matches_whole_stream_decode(codec, token_sets):
    token_sets, voice = token_sets
    if codec.matches_timbre:
        voice = None  # its live EQ follows a running statistic (tests/test_timbre.py)
    table = StreamTable(codec.layout, voice=codec.voice)
    svc = DecoderService(codec)
    audio: dict[int, list[np.ndarray]] = {i: [] for i in range(len(token_sets))}
    sessions = {}
    width = {"275": 10, "175": 6}
    # interleave the streams' 0.4 s packets, as live devices would, decoding as we go
    for k in range(0, 225, 10):
        for i, (ids, mode) in enumerate(token_sets):
            if k >= len(ids):
                continue
            p = Packet(i, k // 10, k, ids[k : k + 10], width[mode], mode, eos=k + 10 >= len(ids),
                       voice=voice if k == 0 else None)
            sessions[i], _ = table.route(f"dev{i}", p, 0.0)
        ended = table.tick(0.0)
        jobs = [j for s in table.sessions.values() for j in svc.plan(s)]
        jobs += [j for s in ended for j in svc.plan(s, final=True)]
        for j in svc.run(jobs):
            audio[j.session.stream_id].append(j.audio)
    assert svc.stats.batches < 3 * 23  # streams shared forward passes
    for i, (ids, mode) in enumerate(token_sets):
        got = np.concatenate(audio[i])
        ref = codec.decode(Tokens(ids, mode, codec.codec_id, voice=voice))
        assert len(got) == len(ids) * 640 == len(ref)
        # (Codec.decode fades the outer 5 ms of a stream that has DTX anywhere; a live
        # decoder cannot know that yet, so the comparison skips those samples)
        inner = slice(80, -80)
        assert np.abs(got[inner] - ref[inner]).max() < 1e-3, f"stream {i} differs"
