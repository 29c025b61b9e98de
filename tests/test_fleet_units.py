"""Unit checks of the fleet's pieces: plaintext only on loopback, quotas, log limits,
the generated broker files, and the password hash mosquitto reads."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys

import pytest

from gacflow.cloud import config
from gacflow.cloud.cli import build_parser
from gacflow.cloud.fleet_files import acl_text, password_hash
from gacflow.cloud.quota import DeviceQuota, LogLimiter, QuotaPolicy
from gacflow.errors import ConfigError


def resolved(*argv: str) -> config.CloudConfig:
    return config.resolve(build_parser().parse_args(list(argv)), env={})


def test_plaintext_only_to_loopback():
    for ok in ("mqtt://127.0.0.1:1883", "mqtt://localhost", "mqtt://[::1]:1883",
               "mqtts://broker.example.org"):
        config.preflight(resolved("--broker", ok))
    with pytest.raises(ConfigError, match="plaintext MQTT to another host"):
        config.preflight(resolved("--broker", "mqtt://broker.example.org:1883"))
    config.preflight(resolved("--broker", "mqtt://10.0.0.2", "--allow-plaintext"))


def test_plaintext_refusal_is_one_line_exit_2():
    r = subprocess.run([sys.executable, "-m", "gacflow.cloud.cli", "--broker",
                        "mqtt://192.0.2.1:1883"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "use mqtts://" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_quota_size_rate_and_burst():
    q = DeviceQuota(QuotaPolicy(max_packet_bytes=100, packets_per_s=10, burst=5))
    assert q.check("a", 101, 0.0) == "size"
    assert [q.check("a", 10, 0.0) for _ in range(6)] == [None] * 5 + ["rate"]
    assert q.check("b", 10, 0.0) is None  # another device has its own bucket
    assert q.check("a", 10, 0.1) is None  # 0.1 s at 10/s: one packet's worth back
    assert q.check("a", 10, 0.1) == "rate"
    assert [q.check("a", 10, 100.0) for _ in range(6)].count(None) == 5  # burst, not more


def test_log_limiter_says_how_many_it_held_back():
    lim = LogLimiter(60)
    assert lim.allow(("a", "bad"), 0) == (True, 0)
    assert lim.allow(("a", "bad"), 1) == (False, 0)
    assert lim.allow(("a", "bad"), 2) == (False, 0)
    assert lim.allow(("b", "bad"), 2) == (True, 0)
    assert lim.allow(("a", "bad"), 61) == (True, 2)


def test_acl_names_every_device_and_only_its_topics():
    text = acl_text(["b", "a"])
    assert "pattern" not in text and "%u" not in text
    block = text.split("user a\n")[1].split("\n\n")[0].splitlines()
    assert block == ["topic write gacflow/v1/a/tokens", "topic write gacflow/v1/a/status",
                     "topic read gacflow/v1/a/control"]


def test_password_hash_is_mosquittos_pbkdf2_format():
    h = password_hash("s3cret", salt=b"0123456789ab")
    _, kind, rounds, salt, digest = h.split("$")
    assert kind == "7" and base64.b64decode(salt) == b"0123456789ab"
    assert base64.b64decode(digest) == hashlib.pbkdf2_hmac("sha512", b"s3cret",
                                                           b"0123456789ab", int(rounds), 64)
    assert "s3cret" not in h


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")
def test_broker_certificate_names_every_given_host(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gacflow.cloud.cli", "provision", "d1", "--fleet",
                        str(tmp_path / "f"), "--broker", "mqtts://broker.example.org:8883",
                        "--broker-names", "localhost,127.0.0.1"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    text = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                           str(tmp_path / "f" / "broker" / "server.crt")], capture_output=True,
                          text=True, check=True).stdout
    for name in ("DNS:broker.example.org", "DNS:localhost", "IP Address:127.0.0.1"):
        assert name in text
    again = subprocess.run([sys.executable, "-m", "gacflow.cloud.cli", "provision", "d2",
                            "--fleet", str(tmp_path / "f"), "--auth", "password"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "auth cert" in again.stderr
