"""AIBRIDGE_REDIS_URL's forms (pure parsing: no server), its masking, and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelManagedSSLConnection

from shared.config import ConfigError, load_settings
from shared.redis import PromptCheckoutPool, PromptCheckoutSentinelPool, connection_pool
from shared.redis_url import describe_redis, parse_redis_url

SECRET = "pa:ss@w/rd"  # percent-encoded in the URLs below
ENCODED = "pa%3Ass%40w%2Frd"


def test_a_password_and_an_acl_user_are_decoded_and_masked() -> None:
    target = parse_redis_url(f"redis://alice:{ENCODED}@redis.internal:6380/3")
    assert (target.username, target.password, target.addresses, target.db) == (
        "alice",
        SECRET,
        (("redis.internal", 6380),),
        3,
    )
    assert target.masked == "redis://alice:***@redis.internal:6380/3"
    assert SECRET not in repr(target) and ENCODED not in repr(target)
    assert parse_redis_url(f"redis://:{ENCODED}@h").masked == "redis://:***@h"


def test_tls_takes_a_ca_file_and_a_client_certificate(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("-")
    url = (
        f"rediss://u:{ENCODED}@h:6390/0?ssl_ca_certs={tmp_path}/ca.pem"
        f"&ssl_certfile={tmp_path}/client.pem&ssl_keyfile={tmp_path}/client.key"
    )
    target = parse_redis_url(url)
    assert target.tls_kwargs() == {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": f"{tmp_path}/ca.pem",
        "ssl_certfile": f"{tmp_path}/client.pem",
        "ssl_keyfile": f"{tmp_path}/client.key",
    }
    pool = connection_pool(url)
    assert isinstance(pool, PromptCheckoutPool) and pool.connection_class is SSLConnection
    unverified = parse_redis_url("rediss://h?ssl_cert_reqs=none").tls_kwargs()
    assert unverified == {"ssl_cert_reqs": "none", "ssl_check_hostname": False}


def test_a_sentinel_url_names_the_sentinels_the_master_and_the_database() -> None:
    url = f"rediss+sentinel://:{ENCODED}@s1:26380,s2,[::1]:26381/gateway/2?sentinel_password=sentinel-secret"
    target = parse_redis_url(url)
    assert target.sentinel and target.tls
    assert target.addresses == (("s1", 26380), ("s2", 26379), ("::1", 26381))
    assert (target.master, target.db, target.password) == ("gateway", 2, SECRET)
    assert target.sentinel_kwargs()["password"] == "sentinel-secret"
    assert target.masked == "rediss+sentinel://:***@s1:26380,s2,[::1]:26381/gateway/2?sentinel_password=***"
    pool = connection_pool(url)
    assert isinstance(pool, PromptCheckoutSentinelPool)
    assert pool.connection_class is SentinelManagedSSLConnection and pool.service_name == "gateway"
    assert parse_redis_url("redis+sentinel://s1/gateway").db == 0


def test_a_unix_socket_url_still_works() -> None:
    pool = connection_pool("unix:///run/redis.sock?db=4")
    assert pool.connection_class is UnixDomainSocketConnection
    assert pool.connection_kwargs["path"] == "/run/redis.sock" and pool.connection_kwargs["db"] == 4


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h", "must start with redis://"),
        ("redis://h?ssl_ca_certs=/ca.pem", "TLS parameters need rediss://"),
        ("rediss://h?ssl_ca_certs=/no/such/ca.pem", "no such file: /no/such/ca.pem"),
        ("rediss://h?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of"),
        ("rediss://h?ssl_certfile=/etc/hostname", "needs both ssl_certfile and ssl_keyfile"),
        ("rediss://h?socket_timeout=1", "unknown parameter 'socket_timeout'"),
        ("redis+sentinel://s1:26379", "needs the master's name"),
        ("redis://h1,h2", "use redis+sentinel://"),
        ("redis://h:port", "bad port"),
        ("redis://h/zero", "the database must be a number"),
    ],
)
def test_a_url_the_gateway_cannot_use_is_one_line_that_never_shows_the_password(
    url: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_password = url.replace("://", f"://:{ENCODED}@", 1)
    monkeypatch.setenv("AIBRIDGE_REDIS_URL", with_password)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    text = str(raised.value)
    assert message in text and "AIBRIDGE_REDIS_URL" in text and "\n" not in text
    assert ENCODED not in text and SECRET not in text


def test_the_start_line_names_the_redis_masked_and_the_key_prefix() -> None:
    assert describe_redis(f"redis://alice:{ENCODED}@h:6379/0", "team-a:") == (
        "Redis at redis://alice:***@h:6379/0, key prefix 'team-a:'"
    )
