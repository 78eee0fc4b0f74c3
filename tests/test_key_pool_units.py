"""The pure parts of the key pools: what an answer means for its key, how long a 429 asks to wait, the hint
a record keeps, and the answer when no key is left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import orjson
import pytest

from shared.config import load_settings
from shared.families import Family
from shared.key_pool import KeyOutcome, KeysExhausted, fingerprint, key_outcome, masked, retry_after
from shared.providers import provider
from shared.upstream import exhausted_failure


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, KeyOutcome.KEPT),
        (400, KeyOutcome.KEPT),
        (401, KeyOutcome.DISABLED),
        (403, KeyOutcome.DISABLED),
        (404, KeyOutcome.KEPT),
        (429, KeyOutcome.COOLING),
        (500, KeyOutcome.KEPT),
        (503, KeyOutcome.KEPT),
    ],
)
def test_only_rate_limits_and_refusals_put_a_key_out(status, outcome):
    assert key_outcome(status) is outcome


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # the finer one wins
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after": "-3"}, 60.0),
        ({"retry-after": "soon"}, 60.0),
        ({"retry-after-ms": "nan", "retry-after": "4"}, 4.0),
        ({}, 60.0),
    ],
)
def test_retry_after_reads_milliseconds_then_seconds_then_the_default(headers, seconds):
    assert retry_after(headers, 60.0) == seconds


def test_retry_after_reads_an_http_date():
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 28 <= retry_after({"retry-after": when}, 60.0) <= 30
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert retry_after({"retry-after": past}, 60.0) == 0


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("sk-proj-abcdefghijklmnop1234", "sk-...1234"),
        ("sk-ant-api03-abcdefghijk9876", "sk-...9876"),
        ("abcdefghijklmnopqrstuvwxyz", "...wxyz"),  # no prefix: nothing of its start
        ("secretvalue-abcdefghij5678", "...5678"),  # a long "prefix" is the secret itself
        ("short-key", "..."),
    ],
)
def test_a_masked_key_shows_its_prefix_and_last_four(key, hint):
    assert masked(key) == hint


def test_a_fingerprint_is_stable_and_does_not_contain_the_key():
    assert fingerprint("sk-abc123456789") == fingerprint("sk-abc123456789")
    assert fingerprint("sk-abc123456789") != fingerprint("sk-abc123456780")
    assert "abc123" not in fingerprint("sk-abc123456789")


def test_a_key_variable_may_hold_several_keys_separated_by_commas():
    settings = load_settings(openai_api_key="sk-one, sk-two,,", anthropic_api_key="sk-ant-only")
    assert [key.get_secret_value() for key in provider(settings, "openai").keys] == ["sk-one", "sk-two"]
    assert [key.get_secret_value() for key in provider(settings, "anthropic").keys] == ["sk-ant-only"]


def test_no_key_left_is_a_429_with_retry_after_or_a_503_without():
    anthropic = provider(load_settings(), "anthropic")
    cooling = exhausted_failure(anthropic, KeysExhausted(13))
    assert (cooling.status, cooling.headers) == (429, {"Retry-After": "13"})
    body = orjson.loads(cooling.body_for(Family.ANTHROPIC_MESSAGES))
    assert body["error"]["type"] == "rate_limit_error"
    disabled = exhausted_failure(anthropic, KeysExhausted(None))
    assert (disabled.status, disabled.headers) == (503, {})
    assert orjson.loads(disabled.body_for(Family.OPENAI_CHAT))["error"]["code"] == "upstream_keys_disabled"
