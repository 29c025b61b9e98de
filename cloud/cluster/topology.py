"""The RabbitMQ objects of a fleet deployment, declared idempotently by every worker.

    devices --MQTT--> amq.topic  (routing key gacflow.v1.<device>.tokens / .status)
      amq.topic --gacflow.v1.*.tokens--> gacflow.fleet (x-consistent-hash on the routing key)
        gacflow.fleet --> gacflow.fleet.p00 .. pNN  (quorum, single active consumer)
      amq.topic --gacflow.v1.*.status--> one exclusive queue per worker (every worker
                                         needs every device's codec and stream nonce)
    workers <--> gacflow.members (fanout): heartbeats, for the partition assignment

The routing key holds the device id, so a device always hashes to the same partition;
partitions outlive workers, so a dead worker's devices wait, durable and replicated on
a quorum of nodes, for the worker that takes the partition over.
"""

from __future__ import annotations

from gacflow import topics

TOPIC_EXCHANGE = "amq.topic"  # where RabbitMQ's MQTT plugin publishes
FLEET_EXCHANGE = "gacflow.fleet"
MEMBERS_EXCHANGE = "gacflow.members"
DEFAULT_PARTITIONS = 24  # divisible by 1, 2, 3, 4, 6, 8, 12: even shares for those counts
RING_WEIGHT = 200  # points per partition on the hash ring: keeps the shares even
MAX_PARTITIONS = 256


def partition_queue(p: int) -> str:
    return f"{FLEET_EXCHANGE}.p{p:03d}"


def routing_key(kind: str) -> str:
    """AMQP binding key for all devices' `kind` messages. RabbitMQ 3.10's MQTT plugin turns
    each '/' into '.' and keeps a device id's own dots, so the device is '#' (any words)."""
    return f"{topics.PREFIX.replace('/', '.')}.#.{kind}"


def topic_of(key: str) -> str:
    """The MQTT topic of an AMQP routing key: prefix words, device (may hold dots), kind."""
    prefix = topics.PREFIX.replace("/", ".") + "."
    if not key.startswith(prefix) or key.count(".") < 3:
        return key  # Receiver.handle refuses it as an unexpected topic, once
    device, _, kind = key[len(prefix):].rpartition(".")
    return f"{topics.PREFIX}/{device}/{kind}"


def declare(channel, partitions: int) -> None:
    """Declare (or check) the exchanges, the partition queues and their bindings."""
    channel.exchange_declare(FLEET_EXCHANGE, "x-consistent-hash", durable=True)
    channel.exchange_bind(FLEET_EXCHANGE, TOPIC_EXCHANGE, routing_key("tokens"))
    channel.exchange_declare(MEMBERS_EXCHANGE, "fanout", durable=False)
    for p in range(partitions):
        q = partition_queue(p)
        channel.queue_declare(q, durable=True, arguments={
            "x-queue-type": "quorum", "x-single-active-consumer": True})
        channel.queue_bind(q, FLEET_EXCHANGE, str(RING_WEIGHT))
