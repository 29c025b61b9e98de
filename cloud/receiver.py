"""The receiver's main loop: subscriber -> streams -> decoder service -> sinks.

One thread does all the work in steps: take what the subscriber queued, route each
message (status or packet) to its session, commit the archive, acknowledge the
messages, advance the jitter buffers, decode every settled window of every stream in
one batch, and hand the audio to the WAV sink. Bad input is counted per device and
logged at most once a minute per device and kind; packets over a device's quota
(cloud/quota.py) are dropped before parsing; nothing a device sends can end the loop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gacflow import topics
from gacflow.bitstream import decode_packet
from gacflow.errors import BitstreamError, GacflowError
from gacflow.spec import FRAME_RATE

from .decoder_service import DecoderService
from .metrics import Metrics
from .partition import Partition
from .quota import DeviceQuota, LogLimiter, QuotaPolicy
from .sinks import Archive, ArchiveWriteError, WavSink
from .streams import Session, StreamPolicy, StreamTable, stream_key
from .subscriber import Message, Subscriber

log = logging.getLogger("gacflow.cloud")


def status_codec(status: dict) -> str | None:
    """The codec id a device announces in its birth message."""
    for key in ("codec_id", "codec"):
        v = status.get(key)
        if isinstance(v, str):
            return v
    return None


def status_details(codec_id: str | None, mode: object) -> str:
    """' (codec X, mode Y)' with only the fields the device told us; '' when none."""
    parts = [f"{k} {v}" for k, v in (("codec", codec_id), ("mode", mode)) if v is not None]
    return f" ({', '.join(parts)})" if parts else ""


class Receiver:
    def __init__(self, codec, out: str | Path, archive: str | Path | None = None,
                 policy: StreamPolicy | None = None, metrics: Metrics | None = None,
                 decoder: DecoderService | None = None,
                 partition: Partition | None = None,
                 quota: QuotaPolicy | None = None) -> None:
        self.codec = codec
        self.partition = partition
        self.table = StreamTable(codec.layout, policy, codec.voice)
        self.decoder = decoder or DecoderService(codec)
        self.wavs = WavSink(out)
        self.archive = Archive(archive) if archive else None
        self.metrics = metrics or Metrics()
        self.status: dict[str, dict] = {}
        self.nonces: dict[str, str | None] = {}  # device -> stream nonce of its last birth
        self.devices: set[str] = set()
        self.quota = DeviceQuota(quota)
        self.limiter = LogLimiter(self.quota.policy.log_interval)
        self.open_sessions: dict[str, int] = {}  # device -> live sessions (quota)
        self.unacked: list[Message] = []  # handled, but the archive could not commit them
        self.finished: list[tuple[Session, Path]] = []
        self.on_finished: Callable[[Session, Path], None] | None = None

    # -- intake ---------------------------------------------------------------------
    def handle(self, msg: Message) -> None:
        parsed = topics.parse_topic(msg.topic)
        if parsed is None:
            self._warn("?", "topic", f"ignoring message on unexpected topic {msg.topic!r}")
            return
        device, kind = parsed
        if self.partition is not None and not self.partition.owns(device):
            # another worker's device: acknowledged (by step) and dropped before any work
            if kind == "tokens":
                self.metrics.add("packets_other_partition_total")
            return
        self.devices.add(device)
        if kind == "status":
            if not self._status_over_quota(device, msg.payload):
                self._status(device, msg.payload)
        elif kind == "tokens":
            self._packet(device, msg.payload, msg.arrival)

    def _status_over_quota(self, device: str, payload: bytes) -> bool:
        """Status messages share the device's size and rate quota (and its log lines)."""
        over = self.quota.check(device, len(payload), time.time())
        if over:
            self.metrics.inc("quota_dropped", device)
            self._warn(device, "quota", f"device {device}: status message over its {over} "
                       "quota; dropped")
        return over is not None

    def _status(self, device: str, payload: bytes) -> None:
        st = topics.parse_status(payload)
        if st is None:
            if payload:  # an empty retained message just clears the status
                self._warn(device, "status", f"device {device}: unreadable status message")
            return
        self.status[device] = st
        if st["online"]:
            self._stream_nonce(device, st.get("stream_nonce"))
        codec_id = status_codec(st)
        log.info("device %s %s%s", device, "online" if st["online"] else "offline",
                 status_details(codec_id, st.get("mode")))
        if codec_id and codec_id != self.codec.codec_id:
            self._warn(device, "codec",
                       f"device {device} runs codec {codec_id!r}, this receiver holds "
                       f"{self.codec.codec_id!r}: its packets are archived, not decoded")

    def _stream_nonce(self, device: str, nonce: object) -> None:
        """Remember the birth message's stream nonce: it keys the device's next streams."""
        nonce = nonce if isinstance(nonce, str) else None
        if device in self.nonces and nonce != self.nonces[device]:
            log.info("device %s: new stream nonce %s (new or wiped queue): its stream ids "
                     "start new streams, not replays", device, nonce)
        self.nonces[device] = nonce

    def _packet(self, device: str, payload: bytes, arrival: float) -> None:
        m = self.metrics
        m.inc("packets", device)
        m.inc("bytes", device, len(payload))
        over = self.quota.check(device, len(payload), arrival)
        if over:  # dropped before any parsing; not archived (a flood costs no disk)
            m.inc("quota_dropped", device)
            self._warn(device, "quota", f"device {device}: over its {over} quota "
                       f"({len(payload)} B packet); dropped")
            return
        codec_id = status_codec(self.status.get(device, {}))
        if codec_id and codec_id != self.codec.codec_id:
            m.inc("codec_mismatch", device)
            self._warn(device, "codec", f"device {device} runs codec {codec_id!r}, this "
                       f"receiver holds {self.codec.codec_id!r}: packets archived, not decoded")
            self._archive(device, arrival, payload, None, f"codec {codec_id}")
            return
        try:
            p = decode_packet(payload, self.codec.entropy)
            if self._too_many_sessions(device, p.stream_id):
                m.inc("quota_dropped", device)
                self._warn(device, "sessions", f"device {device}: more than "
                           f"{self.quota.policy.max_sessions} live sessions; packets of "
                           "new ones dropped")
                return
            s, placed = self.table.route(device, p, arrival, self.nonces.get(device))
        except BitstreamError as exc:
            m.inc("bad_packets", device)
            self._warn(device, "bad", f"device {device}: bad packet refused ({exc}); "
                       "further ones are counted, logged at most once a minute")
            self._archive(device, arrival, payload, None, str(exc)[:200])
            return
        if s.packets == 1 and placed.outcome == "new":
            self.open_sessions[device] = self.open_sessions.get(device, 0) + 1
            if self.archive:
                self.archive.open_session(s, codec_id or self.codec.codec_id)
        if placed.outcome == "refused":
            m.inc("refused_packets", device)
            self._warn(device, "refused", f"device {device}: stream {p.stream_id} packet "
                       f"{p.seq} differs from the one received there before: two streams "
                       "share one identity (no new stream nonce?); refused, further ones "
                       "counted, logged at most once a minute")
            self._archive(device, arrival, payload, None, "stream identity conflict")
            return
        if placed.outcome != "new":
            m.inc("duplicates", device)
        else:  # the achieved rate: what the device spent on the stream it sent
            s.payload_bytes += len(payload)
            m.inc("stream_bytes", device, len(payload))
            m.inc("stream_seconds", device, p.frame_count / FRAME_RATE)
            if p.mode == "175":
                s.packets_175 += 1
                m.inc("packets_175", device)
        self._archive(device, arrival, payload, s.name, None)

    def _archive(self, device, arrival, payload, session, error) -> None:
        if self.archive:
            self.archive.add_packet(device, arrival, payload, session, error)

    def _too_many_sessions(self, device: str, stream_id: int) -> bool:
        """A packet that would open one more live session than the device may hold."""
        if self.open_sessions.get(device, 0) < self.quota.policy.max_sessions:
            return False
        keys = (stream_key(device, stream_id, self.nonces.get(device)),
                stream_key(device, stream_id))
        return not any(k in self.table.sessions or k in self.table.recent for k in keys)

    def _warn(self, device: str, kind: str, text: str) -> None:
        """Rate-limited: one line per device and kind per `log_interval`."""
        ok, held = self.limiter.allow((device, kind), time.monotonic())
        if ok:
            log.warning("%s%s", text, f" ({held} similar line(s) suppressed)" if held else "")

    # -- decoding -------------------------------------------------------------------
    def tick(self, now: float, final: bool = False) -> list[Session]:
        """Advance sessions, decode what settled (all of it for ended ones), write audio."""
        ended = self.table.finish_all(now) if final else self.table.tick(now)
        jobs = [j for s in self.table.sessions.values() for j in self.decoder.plan(s)]
        jobs += [j for s in ended for j in self.decoder.plan(s, final=True)]
        for j in self.decoder.run(jobs):
            self.wavs.write(j.session, j.audio)
        for s in list(self.table.sessions.values()) + ended:
            self._report_gaps(s)
        for s in ended:
            self._close(s)
        self._gauges()
        return ended

    def _report_gaps(self, s: Session) -> None:
        """Gaps go to the metrics as soon as they are declared, not at the session's end."""
        gaps, lost = s.reported
        if (s.gaps, s.lost_frames) != (gaps, lost):
            self.metrics.inc("gaps", s.device, s.gaps - gaps)
            self.metrics.inc("lost_frames", s.device, s.lost_frames - lost)
            s.reported = (s.gaps, s.lost_frames)

    def _close(self, s: Session) -> None:
        path = self.wavs.close(s)
        m = self.metrics
        m.inc("sessions", s.device)
        self.open_sessions[s.device] = max(0, self.open_sessions.get(s.device, 0) - 1)
        if self.archive:
            self.archive.close_session(s, str(path))
            self._commit()
        secs = s.frames / FRAME_RATE
        log.info("session %s/%s done: %.1f s, %d packets (%d at 175), %.0f bit/s payload, "
                 "%d gaps (%d frames lost), %s", s.device, s.name, secs, s.packets,
                 s.packets_175, s.payload_bytes * 8 / secs if secs else 0.0, s.gaps,
                 s.lost_frames, path)
        self.finished.append((s, path))
        if self.on_finished:
            self.on_finished(s, path)

    def _gauges(self) -> None:
        st = self.decoder.stats
        m = self.metrics
        m.set("devices", len(self.devices))
        m.set("live_sessions", len(self.table.sessions))
        m.set("decode_latency_seconds", st.last_latency)
        m.set("decode_rtf", st.rtf)
        m.set("decoded_audio_seconds_total", st.seconds_audio)
        m.set("decode_batches_total", st.batches)

    # -- restart --------------------------------------------------------------------
    def recover(self) -> int:
        """Reload sessions that were live when the receiver last stopped; returns how many."""
        if not self.archive:
            return 0
        n = 0
        for device, name, _sid, _codec, started in self.archive.sessions(live_only=True):
            s = None
            for arrival, payload in self.archive.packets(device, name):
                try:
                    p = decode_packet(payload, self.codec.entropy)
                except BitstreamError:
                    continue
                s = self.table.session_for(device, p, started, name=name)
                try:
                    if s.place(p, arrival).outcome == "new":
                        s.payload_bytes += len(payload)
                        s.packets_175 += p.mode == "175"
                except BitstreamError:
                    continue
            if s is not None:
                s.started = started
                self.devices.add(device)
                self.open_sessions[device] = self.open_sessions.get(device, 0) + 1
                n += 1
        if n:
            log.info("resumed %d live session(s) from the archive", n)
        return n

    # -- the loop -------------------------------------------------------------------
    def step(self, sub: Subscriber, timeout: float = 0.1, max_messages: int = 2000) -> int:
        """One round; returns the number of messages handled."""
        msgs = []
        try:
            msgs.append(sub.inbox.get(timeout=timeout))
            while len(msgs) < max_messages:
                msgs.append(sub.inbox.get_nowait())
        except queue.Empty:
            pass
        for msg in msgs:
            try:
                self.handle(msg)
            except GacflowError as exc:  # belt and braces: one bad message never stops us
                self._warn("?", "error", f"message refused: {exc}")
            except Exception:  # a bug, but a device's message must not end the service
                log.exception("internal error on a message from %s (please report)",
                              msg.topic)
        handled = len(msgs)
        if self.archive and (msgs or self.archive.pending):
            if self._commit():
                msgs, self.unacked = self.unacked + msgs, []
            else:  # not on disk: not acknowledged, so the broker keeps them
                self.unacked += msgs
                msgs = []
        for msg in msgs:
            sub.ack(msg)
        self.metrics.set("queue_depth", sub.inbox.qsize())
        self.metrics.set("connected", int(sub.connected))
        self.metrics.set_info("mqtt_protocol", sub.protocol)
        self.tick(time.time())
        return handled

    def _commit(self) -> bool:
        """Commit the archive; on a write error (disk full) count it, say it, keep the rows."""
        failing = bool(self.metrics.gauges["archive_pending_rows"])
        try:
            self.archive.commit()
        except ArchiveWriteError as exc:
            self.metrics.add("archive_write_errors_total")
            self.metrics.set("archive_pending_rows", len(self.archive.pending))
            self._warn("?", "archive", f"{exc}: their messages are not acknowledged (the "
                       "broker keeps them); retrying")
            return False
        if failing:
            log.info("archive %s writable again: pending rows written", self.archive.path)
            self.metrics.set("archive_pending_rows", 0)
        return True

    def run(self, sub: Subscriber, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step(sub)

    def close(self) -> None:
        """Stop without ending live sessions: a restart resumes them from the archive."""
        self.wavs.close_all()
        if self.archive:
            self.archive.close()
