"""Static partitioning of devices across receiver workers (`--partition I/N`).

mosquitto hands shared-subscription messages out round-robin per message, which would
split one device's stream across workers. Instead every worker subscribes to all
devices and keeps only those whose stable hash falls in its partition, so a device's
packets always land on the same worker. The hash is CRC-32 of the device id: the same in
every process and Python version (unlike `hash()`, which is salted per process).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from gacflow.errors import ConfigError

MAX_PARTITIONS = 1024


def partition_of(device: str, count: int) -> int:
    """The partition (0..count-1) that owns `device`."""
    return zlib.crc32(device.encode("utf-8")) % count


@dataclass(frozen=True)
class Partition:
    index: int
    count: int

    def owns(self, device: str) -> bool:
        return partition_of(device, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_partition(text: str) -> Partition:
    """'I/N' -> Partition(I, N), with 0 <= I < N <= 1024; ConfigError otherwise."""
    parts = text.strip().split("/")
    try:
        if len(parts) != 2:
            raise ValueError
        index, count = int(parts[0]), int(parts[1])
    except ValueError:
        raise ConfigError(f"partition must be I/N (e.g. 0/3), got {text!r}") from None
    if not 0 <= index < count <= MAX_PARTITIONS:
        raise ConfigError(f"partition {text!r}: need 0 <= I < N <= {MAX_PARTITIONS}")
    return Partition(index, count)
