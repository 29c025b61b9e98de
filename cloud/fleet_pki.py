"""The fleet CA, done with the `openssl` command: keys, certificates, revocation list.

Why the command and not a Python library: openssl is on every broker host (mosquitto
links it), and nothing secret ever goes on its command line - keys are files (mode 0600)
that it reads and writes itself. EC P-256 keys: small certificates, fast handshakes on
a device.

Layout under the CA folder: ca.key, ca.crt, index.txt / serial / crlnumber (openssl's
CA database) and crl.pem, the list of revoked certificates mosquitto checks.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

from gacflow.errors import ConfigError

CA_CONF = """\
[ca]
default_ca = fleet
[fleet]
dir = {dir}
database = $dir/index.txt
serial = $dir/serial
crlnumber = $dir/crlnumber
new_certs_dir = $dir/issued
certificate = $dir/ca.crt
private_key = $dir/ca.key
default_md = sha256
default_days = {days}
default_crl_days = {crl_days}
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = {san}
"""


def openssl(*args: str, cwd: Path | None = None) -> str:
    """Run openssl; its complaint becomes one ConfigError line."""
    exe = shutil.which("openssl")
    if exe is None:
        raise ConfigError("openssl is not installed (apt-get install openssl)")
    r = subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd)
    if r.returncode:
        last = (r.stderr.strip().splitlines() or ["failed"])[-1]
        raise ConfigError(f"openssl {args[0]}: {last}")
    return r.stdout


def subject_alt_name(hosts: list[str]) -> str:
    """'DNS:broker.example.org,IP:10.0.0.2': every name the broker is reached by."""
    out = []
    for host in hosts:
        try:
            ipaddress.ip_address(host)
            out.append(f"IP:{host}")
        except ValueError:
            out.append(f"DNS:{host}")
    return ",".join(out)


def private(path: Path) -> None:
    os.chmod(path, 0o600)


class FleetCA:
    """A CA folder: make it, issue client/server certificates, revoke, renew the CRL."""

    def __init__(self, folder: Path, broker_host: str = "localhost", days: int = 825,
                 crl_days: int = 3650) -> None:
        self.dir = Path(folder)
        self.key = self.dir / "ca.key"
        self.cert = self.dir / "ca.crt"
        self.crl = self.dir / "crl.pem"
        self.conf = self.dir / "ca.cnf"
        self.broker_host = broker_host
        self.extra_names: list[str] = []  # other names of the broker host (e.g. localhost)
        self.days = days
        self.crl_days = crl_days

    def exists(self) -> bool:
        return self.key.is_file() and self.cert.is_file()

    def create(self, name: str = "gacflow fleet CA") -> None:
        """A new CA key and self-signed certificate, an empty database and CRL."""
        (self.dir / "issued").mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self._write_conf()
        (self.dir / "index.txt").write_text("")
        (self.dir / "serial").write_text("1000\n")
        (self.dir / "crlnumber").write_text("1000\n")
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(self.key))
        private(self.key)
        openssl("req", "-x509", "-new", "-key", str(self.key), "-sha256", "-days", "3650",
                "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", str(self.cert))
        self.renew_crl()

    def _write_conf(self) -> None:
        self.conf.write_text(CA_CONF.format(dir=self.dir.resolve(), days=self.days,
                                            crl_days=self.crl_days,
                                            san=subject_alt_name(
                                                [self.broker_host, *self.extra_names])))

    def issue(self, common_name: str, key: Path, cert: Path, kind: str = "client") -> str:
        """A fresh key and a certificate for `common_name`; returns its serial (hex)."""
        key.parent.mkdir(parents=True, exist_ok=True)
        self._write_conf()  # the server section names the current broker host
        csr = key.with_suffix(".csr")
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
        private(key)
        openssl("req", "-new", "-key", str(key), "-subj", f"/CN={common_name}", "-out", str(csr))
        openssl("ca", "-batch", "-config", str(self.conf), "-extensions", kind, "-notext",
                "-in", str(csr), "-out", str(cert))
        csr.unlink()
        return self.serial_of(cert)

    def serial_of(self, cert: Path) -> str:
        out = openssl("x509", "-in", str(cert), "-noout", "-serial")
        return out.strip().split("=", 1)[1].upper()

    def revoke(self, serial: str) -> None:
        """Put a certificate (by serial) on the CRL; a serial already revoked is fine."""
        issued = self.dir / "issued" / f"{serial.upper()}.pem"
        if not issued.is_file():
            raise ConfigError(f"fleet CA: no certificate with serial {serial}")
        if self._status(serial) != "R":
            openssl("ca", "-config", str(self.conf), "-revoke", str(issued))
        self.renew_crl()

    def _status(self, serial: str) -> str | None:
        for line in (self.dir / "index.txt").read_text().splitlines():
            f = line.split("\t")
            if len(f) > 3 and f[3].upper() == serial.upper():
                return f[0]
        return None

    def renew_crl(self) -> None:
        self._write_conf()
        openssl("ca", "-config", str(self.conf), "-gencrl", "-out", str(self.crl))
