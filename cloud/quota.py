"""Per-device limits on what one device can make the receiver do, and rate-limited warnings.

A device with valid credentials can still be broken or malicious. Before a packet is
parsed, its size and its device's packet rate are checked (a token bucket per device);
a device may hold only so many live sessions. Whatever is over a limit is dropped (not
decoded, not archived) and counted per device, so a flooding device costs the receiver
one dictionary lookup per packet and never disk, while every other device's stream is
handled as before. The defaults are far above what an agent sends: live it sends 1-5
packets/s of ~100 B; after an outage it drains its queue at network speed, which the
burst (20 000 packets, about 5.5 h of 1 s packets) absorbs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class QuotaPolicy:
    max_packet_bytes: int = 4096  # an agent packet is ~100 B (10 s batches: ~500 B)
    packets_per_s: float = 50.0  # sustained rate per device (0: no rate limit)
    burst: int = 20_000  # packets a device may send at once above the rate
    max_sessions: int = 8  # live sessions per device (stream ids x stream nonces)
    log_interval: float = 60.0  # s between two warnings of one kind for one device


class DeviceQuota:
    """Size and rate checks; `check` says why a packet is over its device's quota."""

    def __init__(self, policy: QuotaPolicy | None = None) -> None:
        self.policy = policy or QuotaPolicy()
        self.buckets: dict[str, tuple[float, float]] = {}  # device -> (tokens, last time)

    def check(self, device: str, size: int, now: float) -> str | None:
        """None when the packet may be handled, else 'size' or 'rate' (it is dropped)."""
        p = self.policy
        if size > p.max_packet_bytes:
            return "size"
        if p.packets_per_s <= 0:
            return None
        tokens, last = self.buckets.get(device, (float(p.burst), now))
        tokens = min(float(p.burst), tokens + max(0.0, now - last) * p.packets_per_s)
        if tokens < 1.0:
            self.buckets[device] = (tokens, now)
            return "rate"
        self.buckets[device] = (tokens - 1.0, now)
        return None


class LogLimiter:
    """At most one line per key per interval; the next one says how many were held back."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self.last: dict[tuple[str, str], float] = {}
        self.held: dict[tuple[str, str], int] = {}

    def allow(self, key: tuple[str, str], now: float) -> tuple[bool, int]:
        """(log it?, lines suppressed since the last one that was logged)."""
        last = self.last.get(key)
        if last is not None and now - last < self.interval:
            self.held[key] = self.held.get(key, 0) + 1
            return False, 0
        self.last[key] = now
        return True, self.held.pop(key, 0)
