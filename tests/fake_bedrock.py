"""A fake AWS Bedrock runtime (and STS) on loopback: it checks every request's SigV4 signature by recomputing
it with botocore (403 for a bad one, as AWS does), answers InvokeModel with a Messages body and
InvokeModelWithResponseStream with a real AWS event stream, and AssumeRole with temporary credentials."""

from __future__ import annotations

import asyncio
import base64
import binascii
import struct
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (lengths and their CRC), string headers, payload, message CRC."""
    encoded = b"".join(
        struct.pack(">B", len(name)) + name.encode() + struct.pack(">BH", 7, len(value)) + value.encode()
        for name, value in headers.items()
    )
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack(">I", binascii.crc32(message))


def chunk_frame(event: dict[str, Any]) -> bytes:
    payload = orjson.dumps({"bytes": base64.b64encode(orjson.dumps(event)).decode(), "p": "abcdefgh"})
    headers = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, payload)


def exception_frame(exception: str, message: str) -> bytes:
    headers = {
        ":exception-type": exception,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return frame(headers, orjson.dumps({"message": message}))


def text_events(text: str, model: str = "claude-test") -> list[dict[str, Any]]:
    """Anthropic's events of a one-text-block answer, as Bedrock wraps them."""
    usage = {"input_tokens": 9, "output_tokens": 1}
    return [
        {
            "type": "message_start",
            "message": {
                "id": "msg_bdrk_01",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage,
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": usage,
        },
        {"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 9}},
    ]


def text_body(text: str) -> dict[str, Any]:
    return {
        "id": "msg_bdrk_02",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 2},
    }


@dataclass
class Answer:
    """What a model answers: ``text``; streamed, an exception frame after ``fail_after`` events if set."""

    text: str
    fail_after: int | None = None
    exception: tuple[str, str] = ("throttlingException", "Too many tokens, please wait before trying again.")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    access_key: str


@dataclass
class FakeBedrock:
    region: str = "us-east-1"
    credentials: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # key id: (secret, token)
    answers: dict[str, Answer] = field(default_factory=dict)  # by Bedrock model id
    received: list[Received] = field(default_factory=list)
    assumed: list[dict[str, list[str]]] = field(default_factory=list)  # the AssumeRole requests' forms
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def model(self, answer: Answer) -> str:
        model_id = f"anthropic.claude-{uuid.uuid4().hex[:8]}-v1:0"  # the colon gets quoted in the path
        self.answers[model_id] = answer
        return model_id

    def start(self) -> FakeBedrock:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake Bedrock did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/model/{model_id}/invoke", self._invoke)
        app.router.add_post("/model/{model_id}/invoke-with-response-stream", self._invoke)
        app.router.add_post("/", self._assume_role)
        runner = web.AppRunner(app, handle_signals=False)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def _signer(self, request: web.Request, raw: bytes, service: str) -> str | None:
        """The access key id of a request signed right for ``service``; None for any other."""
        fields = _authorization(request.headers.get("Authorization", ""))
        if not {"Credential", "SignedHeaders", "Signature"} <= fields.keys():
            return None
        key_id, _, region, signed_service, _ = fields["Credential"].split("/")
        if key_id not in self.credentials or (region, signed_service) != (self.region, service):
            return None
        secret, token = self.credentials[key_id]
        if request.headers.get("X-Amz-Security-Token") != token:
            return None
        names = fields["SignedHeaders"].split(";")
        headers = {
            name: request.headers[name] for name in names if name != "host" and name in request.headers
        }
        again = AWSRequest(request.method, f"http://{request.host}{request.raw_path}", headers, raw)
        again.context["timestamp"] = request.headers.get("X-Amz-Date", "")
        signer = SigV4Auth(ReadOnlyCredentials(key_id, secret, token), service, region)
        if signer.signed_headers(signer.headers_to_sign(again)) != fields["SignedHeaders"]:
            return None
        expected = signer.signature(signer.string_to_sign(again, signer.canonical_request(again)), again)
        return key_id if expected == fields["Signature"] else None

    async def _invoke(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        key_id = self._signer(request, raw, "bedrock")
        if key_id is None:
            return _aws_error(
                403, "InvalidSignatureException", "The request signature we calculated does not match"
            )
        model_id = unquote(request.match_info["model_id"])
        self.received.append(Received(request.raw_path, dict(request.headers), orjson.loads(raw), key_id))
        answer = self.answers.get(model_id)
        if answer is None:
            return _aws_error(404, "ResourceNotFoundException", f"no model {model_id}")
        if not request.path.endswith("-with-response-stream"):
            return web.Response(body=orjson.dumps(text_body(answer.text)), content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream"})
        await response.prepare(request)
        events = text_events(answer.text)
        if answer.fail_after is not None:
            events = events[: answer.fail_after]
        for event in events:
            encoded = chunk_frame(event)
            for start in range(0, len(encoded), 37):  # frames split across writes, as TCP may deliver them
                await response.write(encoded[start : start + 37])
        if answer.fail_after is not None:
            await response.write(exception_frame(*answer.exception))
        await response.write_eof()
        return response

    async def _assume_role(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self._signer(request, raw, "sts") is None:
            return _aws_error(403, "SignatureDoesNotMatch", "bad signature")
        form = parse_qs(raw.decode())
        self.assumed.append(form)
        key_id, secret, token = f"ASIA{uuid.uuid4().hex[:16].upper()}", uuid.uuid4().hex, uuid.uuid4().hex
        self.credentials[key_id] = (secret, token)
        xml = f"""<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>
<Credentials><AccessKeyId>{key_id}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey>
<SessionToken>{token}</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>
<AssumedRoleUser><AssumedRoleId>AROAEXAMPLE:aibridge</AssumedRoleId><Arn>{form["RoleArn"][0]}</Arn>
</AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>
</AssumeRoleResponse>"""
        return web.Response(text=xml, content_type="text/xml")


def _authorization(header: str) -> dict[str, str]:
    """A SigV4 Authorization header's fields (Credential, SignedHeaders, Signature); {} for another scheme."""
    scheme, _, rest = header.partition(" ")
    if scheme != "AWS4-HMAC-SHA256":
        return {}
    return dict(part.strip().split("=", 1) for part in rest.split(",") if "=" in part)


def _aws_error(status: int, error_type: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"message": message}),
        headers={"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/"},
        content_type="application/json",
    )
