"""A TCP front for the broker nodes' MQTT ports: one address for devices, any live node.

In production a load balancer (or DNS with several A records) sits in front of the
nodes; this one stands in for it on a single machine (the start script, the fault
test). Each device connection goes to the next node in turn that accepts it; when a
node dies its connections drop, the devices reconnect (as MQTT clients do) and land on
a live node. Devices stay unchanged: they only know one broker URL.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading

log = logging.getLogger("gacflow.cloud.cluster")


class Balancer:
    """Listens on 127.0.0.1:`port` (0: a free one) and forwards to `backends` (host, port)."""

    def __init__(self, backends: list[tuple[str, int]], port: int = 0,
                 host: str = "127.0.0.1") -> None:
        self.backends = backends
        self.host, self.port = host, port
        self._next = itertools.cycle(range(len(backends)))
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="balancer")

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> Balancer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._client, self.host, self.port))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(self._loop)  # open connections: cancel, let them unwind
        for t in tasks:
            t.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._forward(reader, writer)
        except asyncio.CancelledError:  # the balancer stops: drop the connection quietly
            writer.close()

    async def _forward(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        start = next(self._next)
        for k in range(len(self.backends)):
            host, port = self.backends[(start + k) % len(self.backends)]
            try:
                up_r, up_w = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
            except (OSError, asyncio.TimeoutError):
                continue
            await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
            return
        log.warning("no broker node accepts connections")
        writer.close()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            try:
                dst.close()
            except OSError:
                pass
