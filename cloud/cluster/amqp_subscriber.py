"""AMQP intake for a fleet worker: the same interface as `cloud.subscriber.Subscriber`.

The receiver's loop (`Receiver.step`) reads `.inbox`, hands each message to
`Receiver.handle` (the very code that handles an MQTT message: topic, status, packet
parsing, dedup) and calls `.ack(msg)` once the archive holds it. This class feeds that
inbox from RabbitMQ instead of an MQTT session:

* one pika connection (to the first reachable node of the list, rotated per worker so
  workers spread over the nodes), one channel, manual acks, a prefetch window;
* it consumes the partition queues the assignment gives this worker (`assign.py`), and
  cancels those it loses; heartbeats go out on the members exchange every second;
* pika is not thread-safe, so all of it runs on one thread: `.ack` only queues the
  delivery tag; the thread sends it. Tags of a lost connection are dropped: the broker
  redelivers those messages and the receiver counts them as duplicates.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass

import pika
import pika.exceptions

from gacflow.cloud.subscriber import Message

from . import topology
from .assign import Membership, assign

log = logging.getLogger("gacflow.cloud.cluster")
HEARTBEAT_S = 1.0


@dataclass
class AmqpMessage(Message):
    gen: int = 0  # connection generation the delivery tag belongs to


class AmqpSubscriber:
    """Consumes this worker's share of the partitions; messages land in `.inbox`."""

    def __init__(self, urls: list[str], worker_id: str,
                 partitions: int = topology.DEFAULT_PARTITIONS, prefetch: int = 2000,
                 member_timeout: float = 4.0) -> None:
        if not urls:
            raise ValueError("no AMQP URL")
        k = zlib.crc32(worker_id.encode()) % len(urls)
        self.urls = urls[k:] + urls[:k]
        self.worker_id = worker_id
        self.partitions = partitions
        self.prefetch = prefetch
        self.inbox: queue.Queue[Message] = queue.Queue()
        self.connected = False
        self.protocol = "amqp-0-9-1"
        self.node = ""  # host:port of the current connection
        self.members = Membership(worker_id, member_timeout)
        self.owned: dict[int, str] = {}  # partition -> consumer tag
        self.counts = {"delivered": 0, "redelivered": 0, "reconnects": 0}
        self._acks: deque[tuple[int, int]] = deque()
        self._gen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="amqp")

    # -- the receiver's side ----------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def ack(self, msg: Message) -> None:
        self._acks.append((getattr(msg, "gen", -1), msg.mid))

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.connected

    @property
    def owned_partitions(self) -> list[int]:
        return sorted(self.owned)

    # -- the pika thread --------------------------------------------------------------
    def _params(self) -> list[pika.URLParameters]:
        out = []
        for u in self.urls:
            p = pika.URLParameters(u)
            p.connection_attempts = 1
            p.socket_timeout = 2
            p.heartbeat = 10
            p.blocked_connection_timeout = 30
            p.client_properties = {"connection_name": f"gacflow-worker {self.worker_id}"}
            out.append(p)
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._session()
            except (pika.exceptions.AMQPError, OSError) as exc:  # TimeoutError is an OSError
                if self._stop.is_set():
                    break
                log.warning("broker connection lost or refused (%s: %s); reconnecting",
                            type(exc).__name__, exc)
            finally:
                self.connected = False
                self.owned.clear()
                self._gen += 1
            self._stop.wait(0.5)
            self.counts["reconnects"] += 1

    def _session(self) -> None:
        conn = pika.BlockingConnection(self._params())
        try:
            ch = conn.channel()
            ch.basic_qos(prefetch_count=self.prefetch)
            topology.declare(ch, self.partitions)
            st = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
            ch.queue_bind(st, topology.TOPIC_EXCHANGE, topology.routing_key("status"))
            ch.basic_consume(st, self._on_status, auto_ack=True)
            mq = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
            ch.queue_bind(mq, topology.MEMBERS_EXCHANGE)
            ch.basic_consume(mq, self._on_member, auto_ack=True)
            params = conn._impl.params
            self.node = f"{params.host}:{params.port}"
            self.connected = True
            log.info("worker %s connected to %s (AMQP)", self.worker_id, self.node)
            gen = self._gen
            last_beat = 0.0
            while not self._stop.is_set():
                now = time.time()
                if now - last_beat >= HEARTBEAT_S:
                    self._beat(ch, "alive")
                    last_beat = now
                self._rebalance(ch, now)
                self._flush_acks(ch, gen)
                conn.process_data_events(time_limit=0.05)
            self._flush_acks(ch, gen)
            self._beat(ch, "bye")
            for tag in list(self.owned.values()):
                ch.basic_cancel(tag)
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 (already dead: nothing to close)
                pass

    def _beat(self, ch, kind: str) -> None:
        body = json.dumps({"id": self.worker_id, "kind": kind}).encode()
        ch.basic_publish(topology.MEMBERS_EXCHANGE, "", body)

    def _rebalance(self, ch, now: float) -> None:
        mine = set(assign(self.members.members(now), self.partitions).get(self.worker_id, []))
        for p in sorted(set(self.owned) - mine):
            ch.basic_cancel(self.owned.pop(p))
            log.info("worker %s hands partition %d over", self.worker_id, p)
        for p in sorted(mine - set(self.owned)):
            self.owned[p] = ch.basic_consume(topology.partition_queue(p), self._on_packet)
        if mine != getattr(self, "_logged", None):
            self._logged = mine
            log.info("worker %s owns %d partition(s) of %d: %s (members: %s)",
                     self.worker_id, len(mine), self.partitions, sorted(mine),
                     ", ".join(self.members.members(now)))

    def _flush_acks(self, ch, gen: int) -> None:
        while self._acks:
            g, tag = self._acks.popleft()
            if g == gen:
                ch.basic_ack(tag)

    # -- deliveries ---------------------------------------------------------------
    def _on_packet(self, ch, method, props, body) -> None:
        self.counts["delivered"] += 1
        self.counts["redelivered"] += int(method.redelivered)
        self.inbox.put(AmqpMessage(topology.topic_of(method.routing_key), body, time.time(),
                                   method.delivery_tag, 1, self._gen))

    def _on_status(self, ch, method, props, body) -> None:
        # qos 0: nothing to acknowledge (auto-ack); the receiver's ack is a no-op for it
        self.inbox.put(Message(topology.topic_of(method.routing_key), body, time.time(), 0, 0))

    def _on_member(self, ch, method, props, body) -> None:
        try:
            msg = json.loads(body)
            member, kind = str(msg["id"]), msg.get("kind")
        except (ValueError, KeyError, TypeError):
            return
        if kind == "bye":
            self.members.left(member)
        else:
            self.members.heard(member, time.time())
