"""A small MQTT 3.1.1 broker in pure Python (asyncio), for `gacflow demo` without mosquitto.

It exists so that the demo runs on a machine where no broker can be installed. It keeps
everything in memory and serves one loopback listener; it is not meant for production.

Supported (OASIS MQTT 3.1.1): CONNECT/CONNACK (clean and persistent sessions, keep-alive
with the 1.5x grace, will messages incl. retained wills, username/password accepted and
ignored), PUBLISH QoS 0/1 both ways (QoS 2 accepted inbound, delivered at QoS <= 1),
retained messages, SUBSCRIBE/UNSUBSCRIBE with '+' and '#', PINGREQ, DISCONNECT, queuing
for offline persistent sessions, re-sending unacknowledged messages with DUP on
reconnect, and client take-over. A malformed packet closes that connection only.
Not supported: QoS 2 delivery to subscribers, MQTT 5 (refused with return code 1),
shared subscriptions ($share/...), TLS, authentication, persistence across restarts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field

log = logging.getLogger("gacflow.embedded_broker")

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = range(8, 15)

MAX_REMAINING_LENGTH = 268_435_455  # the largest value four varint bytes can carry
CONNECT_TIMEOUT = 10.0  # seconds a new connection gets to send its CONNECT


class ProtocolError(Exception):
    """The peer broke MQTT 3.1.1; its connection is closed."""


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool = False


@dataclass
class Session:
    """What the broker keeps per client id; outlives the connection when clean_session=0."""

    client_id: str
    clean: bool
    subs: dict[str, int] = field(default_factory=dict)
    queue: deque[Message] = field(default_factory=deque)
    inflight: OrderedDict[int, Message] = field(default_factory=OrderedDict)
    conn: Connection | None = None
    _pid: int = 0

    def next_pid(self) -> int:
        for _ in range(65535):
            self._pid = self._pid % 65535 + 1
            if self._pid not in self.inflight:
                return self._pid
        raise RuntimeError("no free packet id")  # cannot happen: inflight is capped


# -- wire encoding ---------------------------------------------------------------------
def encode_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(ptype: int, flags: int, body: bytes) -> bytes:
    return bytes([ptype << 4 | flags]) + encode_length(len(body)) + body


def utf8(s: str) -> bytes:
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def publish_packet(msg: Message, qos: int, pid: int, dup: bool = False,
                   retain: bool = False) -> bytes:
    body = utf8(msg.topic) + (pid.to_bytes(2, "big") if qos else b"") + msg.payload
    return packet(PUBLISH, int(dup) << 3 | qos << 1 | int(retain), body)


class Reader:
    """Cursor over one packet body; any overrun is a ProtocolError."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError("packet shorter than its fields")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self) -> str:
        try:
            s = self.binary().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("string is not UTF-8") from exc
        if "\x00" in s:
            raise ProtocolError("string contains U+0000")
        return s

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


# -- topics ----------------------------------------------------------------------------
def valid_filter(f: str) -> bool:
    if not f:
        return False
    levels = f.split("/")
    for i, lvl in enumerate(levels):
        if "#" in lvl and (lvl != "#" or i != len(levels) - 1):
            return False
        if "+" in lvl and lvl != "+":
            return False
    return True


def matches(filt: str, topic: str) -> bool:
    """MQTT topic matching; wildcards at the first level do not match '$' topics."""
    if topic.startswith("$") and filt[:1] in ("+", "#"):
        return False
    f, t = filt.split("/"), topic.split("/")
    for i, lvl in enumerate(f):
        if lvl == "#":
            return True
        if i >= len(t) or (lvl != "+" and lvl != t[i]):
            return False
    return len(f) == len(t)


# -- the broker --------------------------------------------------------------------------
class Connection:
    def __init__(self, broker: Broker, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.broker, self.reader, self.writer = broker, reader, writer
        self.session: Session | None = None
        self.will: Message | None = None
        self.keepalive = 0
        self.closed = False
        self.qos2_pending: set[int] = set()

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.writer.write(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()

    async def read_packet(self, first_packet: bool = False) -> tuple[int, int, bytes]:
        first = (await self.reader.readexactly(1))[0]
        if first_packet and first != CONNECT << 4:
            raise ProtocolError("first packet is not CONNECT")  # before reading any length
        length, mult = 0, 1
        for _ in range(4):
            byte = (await self.reader.readexactly(1))[0]
            length += (byte & 0x7F) * mult
            mult *= 128
            if not byte & 0x80:
                break
        else:
            raise ProtocolError("remaining length longer than 4 bytes")
        if length > self.broker.max_packet:
            raise ProtocolError(f"packet of {length} bytes exceeds {self.broker.max_packet}")
        body = await self.reader.readexactly(length) if length else b""
        return first >> 4, first & 0x0F, body

    async def serve(self) -> None:
        clean_exit = False
        try:
            _, _, body = await asyncio.wait_for(self.read_packet(True), CONNECT_TIMEOUT)
            if not self.on_connect(Reader(body)):
                return
            while not self.closed:
                timeout = 1.5 * self.keepalive if self.keepalive else None
                ptype, flags, body = await asyncio.wait_for(self.read_packet(), timeout)
                if ptype == DISCONNECT:
                    clean_exit = True
                    return
                self.dispatch(ptype, flags, Reader(body))
        except ProtocolError as exc:
            self.broker.stats["malformed"] += 1
            log.warning("closing %s: %s", self.name, exc)
        except (TimeoutError, asyncio.TimeoutError):
            log.info("closing %s: keep-alive timeout", self.name)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass  # the peer went away
        except Exception:  # noqa: BLE001 - one bad connection must never take the broker down
            self.broker.stats["malformed"] += 1
            log.exception("closing %s after an internal error", self.name)
        finally:
            self.close()
            self.broker.detach(self, publish_will=not clean_exit)

    @property
    def name(self) -> str:
        return f"client {self.session.client_id!r}" if self.session else "a new connection"

    # -- packets -----------------------------------------------------------------------
    def on_connect(self, r: Reader) -> bool:
        proto, level = r.string(), r.u8()
        if (proto, level) not in (("MQTT", 4), ("MQIsdp", 3)):
            if proto in ("MQTT", "MQIsdp"):
                self.send(packet(CONNACK, 0, b"\x00\x01"))  # unacceptable protocol version
                return False
            raise ProtocolError(f"unknown protocol {proto!r}")
        flags = r.u8()
        if flags & 0x01:
            raise ProtocolError("reserved CONNECT flag set")
        clean, will_flag = bool(flags & 0x02), bool(flags & 0x04)
        will_qos, will_retain = flags >> 3 & 0x03, bool(flags & 0x20)
        has_pw, has_user = bool(flags & 0x40), bool(flags & 0x80)
        if will_qos == 3 or (not will_flag and (will_qos or will_retain)):
            raise ProtocolError("bad will flags")
        if has_pw and not has_user:
            raise ProtocolError("password without user name")
        self.keepalive = r.u16()
        client_id = r.string()
        if will_flag:
            topic = r.string()
            if not topic or "+" in topic or "#" in topic:
                raise ProtocolError("bad will topic")
            self.will = Message(topic, r.binary(), min(will_qos, 1), will_retain)
        if has_user:
            r.string()
        if has_pw:
            r.binary()
        if r.left:
            raise ProtocolError("trailing bytes after CONNECT payload")
        if not client_id:
            if not clean:
                self.will = None
                self.send(packet(CONNACK, 0, b"\x00\x02"))  # identifier rejected
                return False
            client_id = f"auto-{uuid.uuid4().hex}"
        present = self.broker.attach(self, client_id, clean)
        self.send(packet(CONNACK, 0, bytes([int(present), 0])))
        self.broker.resume(self.session)
        return True

    def dispatch(self, ptype: int, flags: int, r: Reader) -> None:
        expected = {PUBREL: 2, SUBSCRIBE: 2, UNSUBSCRIBE: 2}.get(ptype, 0)
        if ptype != PUBLISH and flags != expected:
            raise ProtocolError(f"bad flags {flags:#x} on packet type {ptype}")
        if ptype == PUBLISH:
            self.on_publish(flags, r)
        elif ptype == PUBACK:
            self.broker.acked(self.session, r.u16())
        elif ptype == PUBREL:
            pid = r.u16()
            self.qos2_pending.discard(pid)
            self.send(packet(PUBCOMP, 0, pid.to_bytes(2, "big")))
        elif ptype in (PUBREC, PUBCOMP):
            r.u16()  # the broker never sends QoS 2, so nothing is waiting on these
        elif ptype == SUBSCRIBE:
            self.on_subscribe(r)
        elif ptype == UNSUBSCRIBE:
            pid = r.u16()
            if not r.left:
                raise ProtocolError("UNSUBSCRIBE without topic filters")
            while r.left:
                self.session.subs.pop(r.string(), None)
            self.send(packet(UNSUBACK, 0, pid.to_bytes(2, "big")))
        elif ptype == PINGREQ:
            self.send(packet(PINGRESP, 0, b""))
        else:
            raise ProtocolError(f"unexpected packet type {ptype}")

    def on_publish(self, flags: int, r: Reader) -> None:
        qos, retain = flags >> 1 & 0x03, bool(flags & 0x01)
        if qos == 3:
            raise ProtocolError("PUBLISH with QoS 3")
        topic = r.string()
        if not topic or "+" in topic or "#" in topic:
            raise ProtocolError(f"bad topic name {topic!r}")
        pid = r.u16() if qos else 0
        if qos and not pid:
            raise ProtocolError("packet id 0")
        msg = Message(topic, r.rest(), min(qos, 1), retain)
        if qos == 2:
            if pid not in self.qos2_pending:  # a DUP re-send of one already taken is not routed
                self.qos2_pending.add(pid)
                self.broker.route(msg)
            self.send(packet(PUBREC, 0, pid.to_bytes(2, "big")))
            return
        self.broker.route(msg)
        if qos == 1:
            self.send(packet(PUBACK, 0, pid.to_bytes(2, "big")))

    def on_subscribe(self, r: Reader) -> None:
        pid = r.u16()
        if not r.left:
            raise ProtocolError("SUBSCRIBE without topic filters")
        granted, new = [], []
        while r.left:
            filt, qos = r.string(), r.u8()
            if qos & 0xFC:
                raise ProtocolError("reserved bits set in requested QoS")
            if not valid_filter(filt) or qos == 3:
                granted.append(0x80)
                continue
            self.session.subs[filt] = min(qos, 1)
            granted.append(min(qos, 1))
            new.append(filt)
        self.send(packet(SUBACK, 0, pid.to_bytes(2, "big") + bytes(granted)))
        for filt in new:
            self.broker.send_retained(self.session, filt)


class Broker:
    """The broker state, touched only from its event loop's thread."""

    def __init__(self, max_inflight: int = 100, max_queued: int = 100_000,
                 max_packet: int = 16 * 1024 * 1024) -> None:
        self.max_inflight, self.max_queued, self.max_packet = max_inflight, max_queued, max_packet
        self.sessions: dict[str, Session] = {}
        self.retained: dict[str, Message] = {}
        self.conns: set[Connection] = set()
        self.stats = {"connections": 0, "malformed": 0, "published": 0, "dropped": 0}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(self, reader, writer)
        self.conns.add(conn)
        self.stats["connections"] += 1
        try:
            await conn.serve()
        finally:
            self.conns.discard(conn)

    def attach(self, conn: Connection, client_id: str, clean: bool) -> bool:
        """Bind a connection to its session; returns the CONNACK session-present flag."""
        old = self.sessions.get(client_id)
        if old is not None and old.conn is not None:
            log.info("client %r connected again; closing its old connection", client_id)
            old.conn.will = None  # a take-over is not a failure of the client
            old.conn.close()
            old.conn = None
        if clean or old is None or old.clean:
            old_present = False
            session = Session(client_id, clean)
            self.sessions[client_id] = session
        else:
            old_present, session = True, old
        session.conn = conn
        conn.session = session
        return old_present

    def detach(self, conn: Connection, publish_will: bool) -> None:
        session = conn.session
        if session is not None and session.conn is conn:
            session.conn = None
            if session.clean:
                self.sessions.pop(session.client_id, None)
        if publish_will and session is not None and conn.will is not None:
            self.route(conn.will)
        conn.will = None

    def resume(self, session: Session) -> None:
        """After CONNECT: re-send what was unacknowledged (DUP), then the queue."""
        for pid, msg in session.inflight.items():
            session.conn.send(publish_packet(msg, 1, pid, dup=True))
        self.pump(session)

    def route(self, msg: Message) -> None:
        self.stats["published"] += 1
        if msg.retain:
            if msg.payload:
                self.retained[msg.topic] = Message(msg.topic, msg.payload, msg.qos, True)
            else:
                self.retained.pop(msg.topic, None)
        for session in list(self.sessions.values()):
            qos = max((q for f, q in session.subs.items() if matches(f, msg.topic)), default=-1)
            if qos >= 0:
                self.deliver(session, Message(msg.topic, msg.payload, min(qos, msg.qos)))

    def send_retained(self, session: Session, filt: str) -> None:
        granted = session.subs[filt]
        for msg in list(self.retained.values()):
            if matches(filt, msg.topic):
                self.deliver(session, Message(msg.topic, msg.payload, min(granted, msg.qos), True))

    def deliver(self, session: Session, msg: Message) -> None:
        if session.conn is None and msg.qos == 0:
            return  # QoS 0 is not queued for offline clients
        if len(session.queue) >= self.max_queued:
            session.queue.popleft()
            self.stats["dropped"] += 1
        session.queue.append(msg)
        self.pump(session)

    def pump(self, session: Session) -> None:
        conn = session.conn
        while conn is not None and session.queue and len(session.inflight) < self.max_inflight:
            msg = session.queue.popleft()
            if msg.qos == 0:
                conn.send(publish_packet(msg, 0, 0, retain=msg.retain))
                continue
            pid = session.next_pid()
            session.inflight[pid] = msg
            conn.send(publish_packet(msg, 1, pid, retain=msg.retain))

    def acked(self, session: Session, pid: int) -> None:
        if session.inflight.pop(pid, None) is not None:
            self.pump(session)

    async def close_all(self) -> None:
        for conn in list(self.conns):
            conn.will = None
            conn.close()
        await asyncio.sleep(0)


class EmbeddedBroker:
    """The broker on 127.0.0.1 in a background thread: `.start()`, `.url`, `.stop()`."""

    kind = "embedded"
    mqtt_version = "3.1.1"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **limits) -> None:
        self.host, self.port = host, port
        self.broker = Broker(**limits)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def stats(self) -> dict[str, int]:
        return dict(self.broker.stats)

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        self._thread = threading.Thread(target=self._run, name="gacflow-embedded-broker",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            self.stop()
            from gacflow.errors import ConfigError

            raise ConfigError(f"embedded MQTT broker did not start: {self._error or 'timeout'}")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self.broker.handle, self.host, self.port))
            self.port = self._server.sockets[0].getsockname()[1]
        except OSError as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.broker.close_all()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive() and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(5)
            except Exception:  # noqa: BLE001 - stopping must not fail; the loop ends anyway
                log.debug("embedded broker shutdown", exc_info=True)
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(10)
        self._thread = None

