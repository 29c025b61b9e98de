"""mqtts:// with a CA file and a user name/password, against a real mosquitto TLS listener."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

pytestmark = pytest.mark.skipif(
    not (shutil.which("openssl") and shutil.which("mosquitto_passwd")),
    reason="needs openssl and mosquitto_passwd")


def make_certs(d: Path) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1."""
    def run(*args):
        subprocess.run(args, check=True, capture_output=True, cwd=d)

    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=gacflow-test-ca")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")


def test_tls_and_credentials(tmp_path, speech):
    from broker import Mosquitto, free_port

    from gacflow.cloud.config import parse_broker
    from gacflow.cloud.subscriber import Subscriber

    make_certs(tmp_path)
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(tmp_path / "passwd"), "rx", "s3cret"],
                   check=True, capture_output=True)
    tls_port = free_port()
    b = Mosquitto(extra_conf=(
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {tmp_path}/ca.crt\ncertfile {tmp_path}/server.crt\n"
        f"keyfile {tmp_path}/server.key\nallow_anonymous false\n"
        f"password_file {tmp_path}/passwd\n"))
    b.start()
    try:
        url = parse_broker(f"mqtts://127.0.0.1:{tls_port}")
        good = Subscriber(url, "rx-tls", username="rx", password="s3cret",
                          ca_file=str(tmp_path / "ca.crt"))
        good.start()
        assert good.wait_connected(10)
        good.stop()
        bad = Subscriber(url, "rx-tls-bad", username="rx", password="wrong",
                         ca_file=str(tmp_path / "ca.crt"))
        bad.start()
        assert not bad.wait_connected(2)
        bad.stop()
    finally:
        b.close()
