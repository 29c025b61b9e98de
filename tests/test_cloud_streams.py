"""Jitter buffer and sessions: reordering, duplicates, loss, DTX holes, implausible packets."""

from __future__ import annotations

import numpy as np
import pytest

from gacflow.bitstream import SILENT, Packet
from gacflow.cloud.streams import ACTIVE, LOST, QUIET, StreamPolicy, StreamTable
from gacflow.errors import BitstreamError
from gacflow.spec import TokenLayout

LAYOUT = TokenLayout()
RNG = np.random.default_rng(0)
IDS = RNG.integers(0, 1024, size=100)


def packets(ids=IDS, per=10, sid=3):
    n = len(ids)
    return [Packet(sid, k, a, ids[a : a + per], 10, "275", eos=a + per >= n)
            for k, a in enumerate(range(0, n, per))]


def run(order, policy=None, now_step=0.0):
    table = StreamTable(LAYOUT, policy or StreamPolicy(reorder_timeout=0.5))
    pk = packets()
    now = 0.0
    s, ended = None, []
    for i in order:
        s, _ = table.route("dev", pk[i], now)
        ended += table.tick(now)
        now += now_step
    ended += table.tick(now + 10)  # the reorder timeout passes
    return s, ended


def test_in_order_stream_ends_on_eos_with_every_frame():
    s, ended = run(range(10))
    assert ended == [s] and s.frames == 100 and s.gaps == 0
    assert (s.state[:100] == ACTIVE).all()


def test_reordered_and_duplicated_packets_give_the_same_frames():
    ref, _ = run(range(10))
    s, _ = run([0, 2, 1, 1, 3, 5, 4, 4, 0, 6, 9, 8, 7])
    assert s.frames == 100 and s.gaps == 0 and s.duplicates == 3
    np.testing.assert_array_equal(s.codes[:100], ref.codes[:100])


def test_dropped_packets_are_counted_gaps_and_the_length_is_kept():
    s, ended = run([0, 1, 3, 4, 6, 9], policy=StreamPolicy(reorder_timeout=0.5))
    assert ended == [s]
    assert s.frames == 100
    assert s.gaps == 3 and s.lost_frames == 40  # packets 2, 5, then 7+8
    assert (s.state[20:30] == QUIET).all()  # long loss -> silence with fades


def test_short_loss_is_interpolated_between_neighbours():
    table = StreamTable(LAYOUT, StreamPolicy(reorder_timeout=0.0, conceal_frames=3))
    pk = [Packet(1, k, 2 * k, IDS[2 * k : 2 * k + 2], 10, "275") for k in range(5)]
    for i in (0, 1, 3, 4):
        s, _ = table.route("d", pk[i], 0.0)
    s.advance(1.0)
    assert s.gaps == 1 and (s.state[4:6] == LOST).all()
    lo, hi = s.codes[3], s.codes[6]
    np.testing.assert_allclose(s.codes[4], lo + (hi - lo) / 3, atol=1e-6)


def test_hole_between_consecutive_sequence_numbers_is_silence_not_loss():
    table = StreamTable(LAYOUT, StreamPolicy(reorder_timeout=0.0))
    a = Packet(1, 0, 0, IDS[:10], 10, "275")
    b = Packet(1, 1, 50, IDS[10:20], 10, "275", eos=True)  # agent skipped 40 silent frames
    table.route("d", a, 0.0)
    s, _ = table.route("d", b, 0.0)
    (done,) = table.tick(1.0)
    assert done.frames == 60 and done.gaps == 0 and (done.state[10:50] == QUIET).all()


def test_dtx_frames_are_silent_and_not_audible():
    ids = IDS[:20].copy()
    ids[5:15] = SILENT
    table = StreamTable(LAYOUT)
    s, _ = table.route("d", Packet(1, 0, 0, ids, 10, "275", eos=True), 0.0)
    s.advance(0.0)
    _, _, audible = s.decoder_input(0, 20)
    assert s.ended and not audible[5:15].any() and audible[:5].all()


def test_idle_session_ends_and_its_holes_become_gaps():
    table = StreamTable(LAYOUT, StreamPolicy(idle_timeout=5.0, reorder_timeout=1.0))
    pk = packets()
    table.route("d", pk[0], 0.0)
    table.route("d", pk[2], 0.0)
    assert table.tick(1.0) == []
    (s,) = table.tick(6.0)
    assert s.frames == 30 and s.gaps == 1


def test_implausible_packets_are_refused_without_a_session():
    table = StreamTable(LAYOUT, StreamPolicy(max_jump_frames=100))
    with pytest.raises(BitstreamError, match="out of range"):
        table.route("d", Packet(1, 0, 0, np.array([64, 1]), 16, "175"), 0.0)
    assert table.sessions == {}
    s, _ = table.route("d", Packet(1, 0, 0, IDS[:10], 10, "275"), 0.0)
    with pytest.raises(BitstreamError, match="jumps"):
        table.route("d", Packet(1, 1, 5000, IDS[:10], 10, "275"), 0.0)
    assert s.end == 10 and s.packets == 1


def test_a_stream_joined_late_starts_where_it_was_joined():
    table = StreamTable(LAYOUT)
    s, _ = table.route("d", Packet(1, 900, 90_000, IDS[:10], 10, "275", eos=True), 0.0)
    s.advance(0.0)
    assert s.ended and s.frames == 10 and s.base == 90_000


def test_redelivery_after_the_end_is_a_duplicate_not_a_new_session():
    table = StreamTable(LAYOUT)
    pk = packets()
    for p in pk:
        table.route("d", p, 0.0)
    (s,) = table.tick(0.0)
    again, placed = table.route("d", pk[4], 1.0)
    assert again is s and placed.outcome == "duplicate" and table.sessions == {}


def test_mixed_modes_in_one_stream():
    table = StreamTable(LAYOUT)
    a = Packet(1, 0, 0, IDS[:10], 10, "275")
    b = Packet(1, 1, 10, IDS[10:20] >> 4, 6, "175", eos=True)
    table.route("d", a, 0.0)
    s, _ = table.route("d", b, 0.0)
    s.advance(0.0)
    assert s.ended and (s.enh[:10] == 1).all() and (s.enh[10:20] == 0).all()
