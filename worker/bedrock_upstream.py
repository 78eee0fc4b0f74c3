"""A Bedrock provider as the worker calls it: Anthropic Messages requests translated to InvokeModel and
InvokeModelWithResponseStream and signed with SigV4 (its static keys, else the default credential chain,
either assuming its role if it has one). The same interface as shared/upstream.py's Upstream."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import aiohttp
import botocore.session
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    Credentials,
    DeferredRefreshableCredentials,
    ReadOnlyCredentials,
)
from botocore.exceptions import BotoCoreError, ClientError
from yarl import URL

from shared.byok import UnusableUpstreamKey
from shared.config import Settings
from shared.provider_config import ProviderConfig
from shared.providers import Provider
from shared.upstream import GatewayFailure, guarded_post, upstream_timeout

logger = logging.getLogger(__name__)

MESSAGES_PATH = "/v1/messages"
ANTHROPIC_VERSION = "bedrock-2023-05-31"
# The client's headers that Bedrock takes in the body instead (anthropic-beta) or not at all.
BODY_HEADERS = frozenset({"anthropic-version", "anthropic-beta"})


class BedrockUpstream:
    """One Bedrock provider's runtime API, as the tool loop posts Messages requests to it."""

    def __init__(self, session: aiohttp.ClientSession, provider: Provider, settings: Settings) -> None:
        if provider.aws is None:
            raise ValueError(f"provider '{provider.name}' is not of type bedrock")
        self._session = session
        self._provider = provider
        self._aws = provider.aws
        self._credentials = aws_credentials(provider.aws)
        if self._credentials is None:
            logger.warning("%s", self._no_credentials())
        self._timeout = upstream_timeout(settings)

    @asynccontextmanager
    async def post(
        self,
        path: str,
        body: dict[str, Any],
        headers: Mapping[str, str] | None = None,
        on_key: Callable[[str], None] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST the Messages request ``body`` to its model's InvokeModel (or, with ``stream``, its
        InvokeModelWithResponseStream), signed; ``headers`` are the client's and the actor's; ``on_key``
        is never called (the AWS credentials are no pooled key)."""
        if path != MESSAGES_PATH:
            raise ValueError(f"Bedrock serves {MESSAGES_PATH} only, not {path}")
        headers = headers or {}
        streaming = body.get("stream") is True
        model_id = str(body.get("model"))
        model_id = self._aws.models.get(model_id, model_id)
        action = "invoke-with-response-stream" if streaming else "invoke"
        url = f"{self._provider.base_url}/model/{quote(model_id, safe='')}/{action}"
        payload = orjson.dumps(bedrock_body(body, headers))
        accept = "X-Amzn-Bedrock-Accept" if streaming else "Accept"
        signed = await self._signed(
            url, payload, {"Content-Type": "application/json", accept: "application/json"}
        )
        sent = {name: value for name, value in headers.items() if name.lower() not in BODY_HEADERS}
        sent.update(signed)
        sent["Accept-Encoding"] = "identity"
        async with guarded_post(
            self._session, URL(url, encoded=True), payload, sent, self._timeout
        ) as response:
            yield response

    async def _signed(self, url: str, payload: bytes, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` with SigV4's: the date, the session token if any, the signature."""
        if self._credentials is None:
            raise GatewayFailure(500, self._no_credentials(), "upstream_credentials_missing", "server_error")
        try:  # refreshing (the chain's sources, the role's STS call) is blocking I/O
            frozen: ReadOnlyCredentials = await asyncio.to_thread(self._credentials.get_frozen_credentials)
        except (BotoCoreError, ClientError) as exc:
            raise GatewayFailure(
                502,
                f"could not get AWS credentials for provider '{self._provider.name}': {exc}",
                "upstream_credentials_failed",
            ) from None
        request = AWSRequest(method="POST", url=url, data=payload, headers=headers)
        SigV4Auth(frozen, "bedrock", self._aws.region).add_auth(request)
        return dict(request.headers.items())

    def _no_credentials(self) -> str:
        return (
            f"provider '{self._provider.name}' (bedrock) has no AWS credentials: set its access_key_id and "
            "secret_access_key, or give the worker the default chain's (AWS_* variables, a profile, a role)"
        )

    def auth_headers(self, client_key: str) -> dict[str, str]:
        raise UnusableUpstreamKey(
            f"provider '{self._provider.name}' (bedrock) signs with the gateway's AWS credentials; "
            "it takes no client key"
        )

    def keyless(self, headers: Mapping[str, str] | None) -> str | None:
        return None  # a refusal is of the AWS credentials, which every request has


def bedrock_body(body: dict[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    """A Messages request as InvokeModel's body: no model (it is in the path) nor stream (so is that), the
    Bedrock API version, and the client's ``anthropic-beta`` features as ``anthropic_beta``."""
    sent = {name: value for name, value in body.items() if name not in ("model", "stream")}
    sent["anthropic_version"] = ANTHROPIC_VERSION
    beta = next((value for name, value in headers.items() if name.lower() == "anthropic-beta"), "")
    if features := [each.strip() for each in beta.split(",") if each.strip()]:
        sent["anthropic_beta"] = features
    return sent


def aws_credentials(config: ProviderConfig) -> Credentials | None:
    """The provider's credentials: its static keys, else the default chain's; assuming its role with them
    if it has one. None when there are none to start from."""
    session = botocore.session.Session()
    if config.access_key_id is not None and config.secret_access_key is not None:
        token = config.session_token.get_secret_value() if config.session_token is not None else None
        source = Credentials(
            config.access_key_id.get_secret_value(), config.secret_access_key.get_secret_value(), token
        )
    else:
        source = session.get_credentials()
    if source is None or config.role_arn is None:
        return source
    fetcher = AssumeRoleCredentialFetcher(
        functools.partial(session.create_client, region_name=config.region),
        source,
        config.role_arn,
        extra_args={"RoleSessionName": f"aibridge-{config.name}"},
    )
    return DeferredRefreshableCredentials(fetcher.fetch_credentials, "assume-role")
