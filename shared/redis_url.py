"""``AIBRIDGE_REDIS_URL``: one server (plain or TLS), a Unix socket, or a Sentinel-managed master; with a
password or an ACL user. Parsed once, shown only masked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")
REDIS_PORT = 6379
SENTINEL_PORT = 26379
MASK = "***"
CERT_REQUIREMENTS = ("required", "optional", "none")


def _file(name: str, value: str) -> str:
    if not Path(value).is_file():
        raise ValueError(f"{name}: no such file: {value}")
    return value


def _flag(name: str, value: str) -> bool:
    if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"{name} must be true or false, not {value!r}")
    return value.lower() in ("true", "1", "yes")


def _cert_requirement(name: str, value: str) -> str:
    if value not in CERT_REQUIREMENTS:
        raise ValueError(f"{name} must be one of {', '.join(CERT_REQUIREMENTS)}, not {value!r}")
    return value


def _text(_name: str, value: str) -> str:
    return value


TLS_PARAMETERS: dict[str, Callable[[str, str], Any]] = {
    "ssl_ca_certs": _file,
    "ssl_certfile": _file,
    "ssl_keyfile": _file,
    "ssl_cert_reqs": _cert_requirement,
    "ssl_check_hostname": _flag,
}
SENTINEL_PARAMETERS: dict[str, Callable[[str, str], Any]] = {
    "sentinel_username": _text,
    "sentinel_password": _text,
}
SECRET_PARAMETERS = ("sentinel_password",)


@dataclass(frozen=True)
class RedisTarget:
    """Where the gateway's Redis is and how to reach it. ``addresses`` are the server's, or the sentinels'."""

    scheme: str
    addresses: tuple[tuple[str, int], ...]
    db: int
    masked: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    socket_path: str | None = None
    master: str | None = None
    options: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def tls(self) -> bool:
        return self.scheme.startswith("rediss")

    @property
    def sentinel(self) -> bool:
        return self.master is not None

    def tls_kwargs(self) -> dict[str, Any]:
        """redis-py's TLS arguments; the hostname is checked unless the certificate is not."""
        if not self.tls:
            return {}
        reqs = self.options.get("ssl_cert_reqs", "required")
        return {
            "ssl_cert_reqs": reqs,
            "ssl_check_hostname": self.options.get("ssl_check_hostname", reqs == "required"),
            **{
                name: self.options[name]
                for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
                if name in self.options
            },
        }

    def sentinel_kwargs(self) -> dict[str, Any]:
        """How to connect to the sentinels themselves: their own credentials, the same TLS."""
        return {
            "username": self.options.get("sentinel_username"),
            "password": self.options.get("sentinel_password"),
            **({"ssl": True, **self.tls_kwargs()} if self.tls else {}),
        }


def parse_redis_url(url: str) -> RedisTarget:
    """Raises ValueError, with a message that never holds the password, for a URL the gateway cannot use."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"must start with {', '.join(s + '://' for s in SCHEMES)}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = _options(query, scheme)
    db = options.pop("db", 0)
    common: dict[str, Any] = {
        "scheme": scheme,
        "username": unquote(user) or None,
        "password": unquote(password) or None,
        "masked": _masked(parts.scheme, user, password, hosts, parts.path, query),
        "options": options,
    }
    if scheme == "unix":
        if not parts.path:
            raise ValueError("unix:// needs the socket's path, e.g. unix:///run/redis.sock")
        return RedisTarget(addresses=(), db=db, socket_path=parts.path, **common)
    if scheme.endswith("+sentinel"):
        master, _, path_db = parts.path.strip("/").partition("/")
        if not master:
            raise ValueError(
                f"{scheme}:// needs the master's name: {scheme}://host:26379/<master name>[/<db>]"
            )
        return RedisTarget(
            addresses=_addresses(hosts, SENTINEL_PORT),
            db=_db(path_db) if path_db else db,
            master=master,
            **common,
        )
    addresses = _addresses(hosts, REDIS_PORT)
    if len(addresses) > 1:
        raise ValueError("names several hosts: use redis+sentinel:// for a Sentinel-managed Redis")
    path_db = parts.path.strip("/")
    return RedisTarget(addresses=addresses, db=_db(path_db) if path_db else db, **common)


def _options(query: list[tuple[str, str]], scheme: str) -> dict[str, Any]:
    known: dict[str, Callable[[str, str], Any]] = {"db": lambda _name, value: _db(value)}
    if scheme.startswith("rediss"):
        known |= TLS_PARAMETERS
    if scheme.endswith("+sentinel"):
        known |= SENTINEL_PARAMETERS
    options: dict[str, Any] = {}
    for name, value in query:
        if name not in known:
            hint = " (TLS parameters need rediss://)" if name in TLS_PARAMETERS else ""
            raise ValueError(f"unknown parameter {name!r}{hint}; known: {', '.join(sorted(known))}")
        options[name] = known[name](name, value)
    if ("ssl_certfile" in options) != ("ssl_keyfile" in options):
        raise ValueError("a client certificate needs both ssl_certfile and ssl_keyfile")
    return options


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"the database must be a number, not {text!r}")
    return int(text)


def _addresses(hosts: str, default_port: int) -> tuple[tuple[str, int], ...]:
    addresses = []
    for host in hosts.split(","):
        parsed = urlsplit(f"//{host}")
        try:
            port = parsed.port or default_port
        except ValueError:
            raise ValueError(f"bad port in {host!r}") from None
        if not parsed.hostname:
            raise ValueError(f"a host is missing in {hosts!r}")
        addresses.append((parsed.hostname, port))
    return tuple(addresses)


def _masked(
    scheme: str, user: str, password: str, hosts: str, path: str, query: list[tuple[str, str]]
) -> str:
    userinfo = f"{user}{':' + MASK if password else ''}@" if user or password else ""
    shown = [(name, MASK if name in SECRET_PARAMETERS else value) for name, value in query]
    return f"{scheme}://{userinfo}{hosts}{path}" + (
        f"?{urlencode(shown, safe='/*', quote_via=quote)}" if shown else ""
    )


def describe_redis(url: str, key_prefix: str) -> str:
    """What a process says at start: which Redis (password masked) and which key prefix."""
    return f"Redis at {parse_redis_url(url).masked}, key prefix {key_prefix!r}"
