"""The edge agent's main loop: source -> encoder -> DTX -> packetizer -> disk queue -> publisher.

Each stage is its own module; this one only wires them and keeps the counters. The
publisher drains the queue on its own thread, so a slow or absent broker never stalls
capture: packets wait on disk.

Latency: audio is read in `block_ms` blocks (20 ms); a token leaves the encoder when its
40 ms frame is complete; DTX holds tokens `PREROLL_FRAMES` more frames (80 ms) to see a
speech onset coming; a packet leaves when its batching interval is full.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import numpy as np

from gacflow.bitstream import SILENT, Packet, encode_packet
from gacflow.bundle import Bundle
from gacflow.errors import ConfigError, GacflowError
from gacflow.spec import FRAME_RATE, SAMPLE_RATE
from gacflow.streaming import StreamingEncoder

from .config import EdgeConfig
from .disk_queue import DiskQueue
from .encoder import open_encoder
from .observe import AgentStats, write_json_atomic
from .packetizer import Packetizer, RateControl
from .publisher import MqttPublisher
from .sources import Source, open_source
from .vad import DtxGate, FrameVad, make_vad

log = logging.getLogger("gacflow.edge.agent")

PREROLL_FRAMES = 2
LIVE_DRAIN_SECONDS = 5.0  # after SIGTERM / EOF on a live source


class DeliveryTimeout(GacflowError):
    """The input ended but the broker did not take every packet within --drain-timeout."""


class EdgeAgent:
    """One session: a new stream id, packets queued on disk, published in order."""

    def __init__(self, cfg: EdgeConfig) -> None:
        self.cfg = cfg
        bundle = Bundle.load(cfg.bundle or None)
        self.mode = bundle.layout.mode(cfg.mode)
        runtime, self.backend = open_encoder(bundle, cfg.backend, cfg.threads)
        self.encoder = StreamingEncoder(runtime, bundle.layout, self.mode, bundle.voice)
        self.entropy = bundle.entropy if cfg.entropy_coding else None
        self.vad: FrameVad | None = None
        if cfg.dtx:
            self.vad = make_vad(cfg.vad, cfg.vad_model, cfg.vad_threshold)
        self.gate = DtxGate(hangover_frames=round(cfg.hangover_ms * FRAME_RATE / 1000),
                            preroll_frames=PREROLL_FRAMES)
        block = cfg.block_ms * SAMPLE_RATE // 1000
        self.source: Source = open_source(cfg.input, block, cfg.pace_factor, cfg.input_device)
        self.queue = DiskQueue(cfg.queue, cfg.queue_max_packets)
        self.stream_id = self.queue.new_stream_id()
        self.packetizer = Packetizer(self.stream_id, self.mode, cfg.batch_seconds,
                                     self.encoder.voice_code, hold_frames=1)
        # --max-bitrate: packets drop from 275 to 175 while the stream is over budget
        self.rate = (RateControl(cfg.max_bitrate, bundle.layout, self.entropy)
                     if cfg.max_bitrate and self.mode.name == "275" else None)
        self.stats = AgentStats(device_id=cfg.device_id, stream_id=self.stream_id,
                                backend=self.backend, vad=self.vad.name if self.vad else "off",
                                mode=self.mode.name, batch_seconds=cfg.batch_seconds)
        self.stats.max_bitrate = cfg.max_bitrate if self.rate is not None else 0.0
        birth = dict(codec_id=bundle.codec_id, mode=self.mode.name,
                     batch_seconds=cfg.batch_seconds, frame_rate=FRAME_RATE, dtx=cfg.dtx,
                     entropy_tables=(f"{self.entropy.tag:02x}" if self.entropy else None),
                     backend=self.backend, stream_id=self.stream_id,
                     stream_nonce=self.queue.stream_nonce())  # see docs/edge.md
        self.publisher = MqttPublisher(cfg, self.queue, birth)
        self._packet_log = None
        if cfg.packet_log:
            try:
                self._packet_log = open(cfg.packet_log, "ab")  # noqa: SIM115 - lives with run
            except OSError as exc:
                raise ConfigError(f"packet-log {cfg.packet_log}: {exc.strerror or exc}") from exc
        self._stopping = threading.Event()
        self._abort = threading.Event()  # a second signal: stop draining, keep the queue
        self._next_status = 0.0

    # --- pipeline ------------------------------------------------------------------------
    def _release(self, tokens: np.ndarray, speech: np.ndarray | None) -> np.ndarray:
        """DTX stage: tokens of silent frames become SILENT (or pass through without DTX)."""
        if self.vad is None:
            return tokens
        return self.gate.push(tokens, speech)

    def _enqueue(self, packets: list[Packet]) -> None:
        for p in packets:
            if self.rate is not None:
                data, p = self.rate.encode(p)
                self.stats.packets_175 = self.rate.low_packets
            else:
                data = encode_packet(p, self.entropy)
            dropped = self.queue.put(data)
            if dropped:
                log.warning("event=queue_full dropped=%d cap=%d", dropped, self.queue.max_packets)
            if self._packet_log:
                self._packet_log.write(data)
                self._packet_log.flush()
            s = self.stats
            s.packets += 1
            s.payload_bytes += len(data)
            # Without DTX the same packet would also carry the silent frames' tokens (plain
            # packing: an upper bound); a packet DTX left alone costs exactly the same.
            silent = int(np.sum(p.tokens == SILENT))
            s.payload_bytes_no_dtx += len(data) + (silent * p.width + 7) // 8
            s.active_frames += p.frame_count - silent
            s.frames += p.frame_count
            s.eos_sent = s.eos_sent or p.eos
        if packets:
            self.publisher.wake()

    def _process(self, block: np.ndarray) -> None:
        t0 = time.perf_counter()
        tokens = self.encoder.push(block)
        self.stats.encoder_seconds += time.perf_counter() - t0
        self.stats.audio_seconds += len(block) / SAMPLE_RATE
        speech = None
        if self.vad is not None:
            t0 = time.perf_counter()
            speech = self.vad.push(block)
            self.stats.vad_seconds += time.perf_counter() - t0
        self._enqueue(self.packetizer.push(self._release(tokens, speech)))

    def _finish_stream(self) -> None:
        """End of input: encode the padded last frame, release DTX, send the eos packet."""
        t0 = time.perf_counter()
        tail = self.encoder.flush()
        self.stats.encoder_seconds += time.perf_counter() - t0
        if self.vad is not None:
            frames = np.concatenate([self.gate.push(tail, np.zeros(0, bool)), self.gate.flush()])
        else:
            frames = tail
        self._enqueue(self.packetizer.push(frames) + [self.packetizer.finish()])
        log.info("event=stream_end stream_id=%d packets=%d frames=%d", self.stream_id,
                 self.stats.packets, self.stats.frames)

    # --- observability -------------------------------------------------------------------
    def _refresh_stats(self) -> None:
        s, ps = self.stats, self.publisher.stats
        s.queue_depth = len(self.queue)
        s.queue_dropped = self.queue.dropped
        s.queue_write_errors = self.queue.write_errors
        s.published, s.acked, s.rejected = ps.published, ps.acked, ps.rejected
        s.connects, s.disconnects = ps.connects, ps.disconnects
        s.connect_failures, s.protocol = ps.connect_failures, ps.protocol
        s.connected = self.publisher.connected.is_set()

    def _tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_status:
            return
        self._next_status = now + self.cfg.status_interval
        self._refresh_stats()
        log.info(self.stats.status_line())
        if self.cfg.stats_json:
            try:
                write_json_atomic(self.cfg.stats_json, self.stats.snapshot())
            except GacflowError as exc:
                log.warning("event=stats_json_failed error=%r", str(exc))

    # --- run -------------------------------------------------------------------------------
    def stop(self, *_: object) -> None:
        """SIGTERM/SIGINT: stop reading; the stream is then flushed and ended normally.

        A second signal, or any signal while the broker is away, ends the drain at once:
        undelivered packets stay in the disk queue for the next run."""
        if self._stopping.is_set():
            self._abort.set()
        self._stopping.set()
        self.source.stop()

    def run(self) -> int:
        """Stream the whole input; return 0 when every packet was delivered."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            if threading.current_thread() is threading.main_thread():
                signal.signal(sig, self.stop)
        log.info("event=start device=%s stream_id=%d input=%s backend=%s vad=%s mode=%s "
                 "batch_seconds=%g queue=%s queued_from_before=%d", self.cfg.device_id,
                 self.stream_id, self.source.name, self.backend, self.stats.vad, self.mode.name,
                 self.cfg.batch_seconds, self.cfg.queue, len(self.queue))
        self.publisher.start()
        try:
            for block in self.source.blocks():
                self._process(block)
                self._tick()
                if self.publisher.fatal:
                    raise self.publisher.fatal
            self._finish_stream()
            brief = self.source.live or self._stopping.is_set()
            timeout = min(self.cfg.drain_timeout, LIVE_DRAIN_SECONDS) if brief \
                else self.cfg.drain_timeout
            delivered = self._drain(timeout)
            if self.publisher.fatal:
                raise self.publisher.fatal
            brief = brief or self._stopping.is_set()  # a signal during the drain
            self.stats.finished = delivered
            self._tick(force=True)
            if not delivered and not brief:
                raise DeliveryTimeout(self._undelivered_message(timeout))
            if not delivered:
                log.warning("event=stopped_with_queue queued=%d (sent on the next run)",
                            len(self.queue))
            return 0
        finally:
            self.close()

    def _drain(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._abort.is_set() or (self._stopping.is_set()
                                        and not self.publisher.connected.is_set()):
                return len(self.queue) == 0
            if self.publisher.drain(min(0.2, max(0.0, deadline - time.monotonic()))):
                return True
            if self.publisher.fatal:
                return False
            self._tick()
        return len(self.queue) == 0

    def _undelivered_message(self, timeout: float) -> str:
        left = len(self.queue)
        reason = self.publisher.diagnose() if not self.publisher.connected.is_set() \
            else "did not acknowledge in time"
        return (f"broker {self.cfg.broker} {reason}: {left} packets still queued in "
                f"{self.cfg.queue} after --drain-timeout {timeout:g} s "
                "(they are sent on the next run)")

    def close(self) -> None:
        self.publisher.close()
        self._refresh_stats()
        if self.cfg.stats_json:
            try:
                write_json_atomic(self.cfg.stats_json, self.stats.snapshot())
            except GacflowError:
                pass
        if self._packet_log:
            self._packet_log.close()
        self.queue.close()

