"""Which worker consumes which partition: membership by heartbeat, a balanced assignment.

Every worker hears every other's heartbeat and computes the same assignment from the
same member list, with no coordinator: each partition goes to the member that ranks it
highest (rendezvous hash of member and partition) among those that still have room
under ceil(P / N). Shares are even (floor or ceil of P / N partitions each), and a
member joining or leaving moves few partitions. While two workers briefly disagree
(a heartbeat in flight), the queues' single-active-consumer flag keeps one consumer per
partition at a time: the assignment is for balance, the broker for safety.
"""

from __future__ import annotations

import zlib


def assign(members: list[str], partitions: int) -> dict[str, list[int]]:
    """member -> its partitions, identical in every process for the same members."""
    if not members:
        return {}
    members = sorted(set(members))
    cap = -(-partitions // len(members))
    owned: dict[str, list[int]] = {m: [] for m in members}
    for p in range(partitions):
        ranked = sorted(members, key=lambda m: zlib.crc32(f"{m}/{p}".encode()), reverse=True)
        for m in ranked:
            if len(owned[m]) < cap:
                owned[m].append(p)
                break
    return owned


class Membership:
    """Members heard from within `timeout` seconds (always including ourselves)."""

    def __init__(self, me: str, timeout: float = 4.0) -> None:
        self.me = me
        self.timeout = timeout
        self.seen: dict[str, float] = {}

    def heard(self, member: str, now: float) -> None:
        self.seen[member] = now

    def left(self, member: str) -> None:
        """A member said goodbye (clean stop): drop it without waiting for the timeout."""
        self.seen.pop(member, None)

    def members(self, now: float) -> list[str]:
        alive = {m for m, t in self.seen.items() if now - t < self.timeout}
        return sorted(alive | {self.me})
