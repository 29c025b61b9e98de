"""The fleet deployment's parts that need no broker: assignment, membership, topics,
acknowledgements across reconnects, and the worker's intake through the receiver."""

from __future__ import annotations

import time

import numpy as np
import pytest

from gacflow import topics
from gacflow.cloud.cluster import nodes, topology
from gacflow.cloud.cluster.amqp_subscriber import AmqpMessage, AmqpSubscriber
from gacflow.cloud.cluster.assign import Membership, assign
from gacflow.errors import ConfigError


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8])
def test_assignment_is_even_and_the_same_everywhere(n):
    members = [f"worker-{i}" for i in range(n)]
    a = assign(members, 24)
    assert sorted(p for ps in a.values() for p in ps) == list(range(24))
    sizes = [len(ps) for ps in a.values()]
    assert max(sizes) - min(sizes) <= 1 and max(sizes) == -(-24 // n)
    assert assign(list(reversed(members)), 24) == a  # order of hearing does not matter


def test_a_joining_worker_moves_few_partitions():
    before = assign(["a", "b", "c"], 24)
    after = assign(["a", "b", "c", "d"], 24)
    moved = sum(1 for m, ps in before.items() for p in ps if p not in after[m])
    assert 6 <= moved <= 12  # 6 is the least that balances 4 workers


def test_membership_times_out_and_says_goodbye():
    m = Membership("me", timeout=4.0)
    m.heard("a", 100.0)
    m.heard("b", 100.0)
    assert m.members(101.0) == ["a", "b", "me"]
    m.left("b")
    assert m.members(101.0) == ["a", "me"]
    assert m.members(105.0) == ["me"]  # a went silent: its partitions move


@pytest.mark.parametrize("device", ["dev1", "dev.with.dots", "a-b_c"])
def test_routing_keys_map_back_to_topics(device):
    # RabbitMQ 3.10's MQTT plugin: every '/' becomes '.', the device id's dots stay
    key = topics.topic(device, "tokens").replace("/", ".")
    assert topology.topic_of(key) == topics.topic(device, "tokens")
    assert topics.parse_topic(topology.topic_of(key)) == (device, "tokens")
    assert topology.routing_key("status") == "gacflow.v1.#.status"
    assert topics.parse_topic(topology.topic_of("other.key")) is None


class Channel:
    """Records what the subscriber sends on its AMQP channel."""

    def __init__(self) -> None:
        self.acked: list[int] = []

    def basic_ack(self, tag: int) -> None:
        self.acked.append(tag)


def test_acks_of_a_lost_connection_are_dropped():
    sub = AmqpSubscriber(["amqp://127.0.0.1:1/%2F"], "w")
    sub.ack(AmqpMessage("t", b"", 0.0, 5, 1, gen=0))
    sub.ack(AmqpMessage("t", b"", 0.0, 6, 1, gen=1))
    ch = Channel()
    sub._flush_acks(ch, gen=1)  # the connection of generation 0 is gone: tag 5 meant it
    assert ch.acked == [6]


def test_amqp_messages_take_the_receivers_mqtt_ingest_path(tmp_path):
    """A worker hands AMQP deliveries to Receiver.step unchanged: same parsing, same dedup."""
    from gacflow.cloud.loadgen import packetize
    from gacflow.cloud.receiver import Receiver
    from gacflow.cloud.streams import StreamPolicy
    from gacflow.model import Codec

    codec = Codec.from_bundle(decoder="small")
    rx = Receiver(codec, tmp_path, tmp_path / "a.sqlite", StreamPolicy(idle_timeout=0.5))
    sub = AmqpSubscriber(["amqp://127.0.0.1:1/%2F"], "w")
    sub.connected = True
    packets = packetize(np.arange(100) % 1024, "275", codec.layout, 25,
                        entropy=codec.entropy)
    key = topics.topic("dev.1", "tokens").replace("/", ".")
    status = topics.status_message(True, codec_id=codec.codec_id, stream_nonce="n1")
    sub.inbox.put(AmqpMessage(topology.topic_of(key.replace("tokens", "status")), status,
                              time.time(), 0, 0))
    for tag, p in enumerate(packets + packets[:2], 1):  # the last two: redeliveries
        sub.inbox.put(AmqpMessage(topology.topic_of(key), p, time.time(), tag, 1))
    rx.step(sub, timeout=0.1)
    assert rx.metrics.total("packets") == 6 and rx.metrics.total("duplicates") == 2
    assert sorted(tag for _, tag in sub._acks) == [0, 1, 2, 3, 4, 5, 6]
    time.sleep(0.6)
    rx.tick(time.time())
    assert rx.finished and rx.finished[0][0].frames == 100
    rx.close()


def test_cluster_without_rabbitmq_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(nodes, "RABBIT_BIN", tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="apt-get install rabbitmq-server"):
        nodes.RabbitCluster(3, tmp_path / "r")


def test_worker_refuses_a_bad_url(tmp_path, capsys):
    from gacflow.cloud.cluster.__main__ import main

    assert main(["worker", "--amqp", "http://x", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--amqp" in err[0]
