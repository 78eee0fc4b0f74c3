"""Bring your own key: a client's own provider key, carried to the worker encrypted.

The API encrypts the key (Fernet: AES-128-CBC + HMAC-SHA256, key ``AIBRIDGE_SECRET_KEY``) into the job; only
the ciphertext crosses Redis, and it expires with the job. The worker decrypts it for that request alone.
"""

from __future__ import annotations

import re

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

HEADER = "X-Upstream-Authorization"
_KEY = re.compile(r"^[\x21-\x7e]{1,1024}$")  # printable ASCII without spaces: safe in a header


class UnusableUpstreamKey(ValueError):
    """An upstream key the gateway will not carry; the message never contains the key."""


class UpstreamKeyCipher:
    def __init__(self, secret_key: SecretStr) -> None:
        self._fernet = Fernet(secret_key.get_secret_value())

    def encrypt(self, upstream_key: str) -> str:
        return self._fernet.encrypt(upstream_key.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken:
            raise UnusableUpstreamKey(
                "the client's upstream key could not be decrypted (is AIBRIDGE_SECRET_KEY the same on the "
                "API and the workers?)"
            ) from None


def parse_header(value: str) -> str:
    """The key in an ``X-Upstream-Authorization`` header: ``Bearer <key>`` or the bare key."""
    scheme, _, rest = value.strip().partition(" ")
    key = rest.strip() if scheme.lower() == "bearer" and rest else value.strip()
    if not _KEY.match(key):
        raise UnusableUpstreamKey(f"{HEADER} must be 'Bearer <key>' with a key of printable characters")
    return key
