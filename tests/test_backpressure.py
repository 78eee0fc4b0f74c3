"""Backpressure: the API reads a job's stream from Redis only as fast as its client takes it.

Twenty clients read a 7 MB answer each at about 1 KB/s (raw sockets with a small receive buffer, so the
kernel cannot absorb the stream) while the worker writes all of it to Redis at once; the API's memory must
stay flat, a fast client on the same API must keep its pace, and every slow client must then get every
chunk in order.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from pathlib import Path

import h11
import httpx2
import orjson
import redis

from api.stream_hub import ENTRY_OVERHEAD, FIRST_READ_COUNT, StreamHub
from shared.keys import RedisKeys
from shared.messages import MessageKind, StreamMessage
from shared.redis import connect
from tests.fake_upstream import SSEReply, chunk

SLOW_CLIENTS = 20
CHUNK_TEXT = 4000  # characters of content per chunk, after a 6-digit index
ANSWER_CHUNKS = 7 * 1024 * 1024 // (CHUNK_TEXT + 200)  # ~7 MB of chunks (an event carries ~200 bytes of JSON)
FAST_CHUNKS = 256  # ~1 MB
SLOW_READ = 256  # bytes per read, four reads a second: ~1 KB/s
SLOW_PHASE = 12.0
# Per stream the API holds about AIBRIDGE_RELAY_BUFFER_BYTES (256 KiB) of entries, and of the batch it is
# sending the SSE bytes, their copy for ASGI and the transport's buffer (64 KiB + one batch): ~1 MiB, so
# 20 MiB for 20 streams, plus 10 MB for the allocator's slack. The old code held the whole answers: ~100 MB.
RSS_GROWTH_BOUND_MB = 30


def answer_events(count: int) -> list[bytes]:
    return [chunk(f"{index:06d}" + "x" * CHUNK_TEXT) for index in range(count)]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class ChunkChecker:
    """Parses one SSE response body as it arrives and checks that chunk indices run 0, 1, 2, ..."""

    def __init__(self) -> None:
        self._partial = b""
        self.next_index = 0
        self.done = False
        self.errors: list[str] = []

    def feed(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            if not line.startswith(b"data: "):
                continue
            payload = line[6:]
            if payload == b"[DONE]":
                self.done = True
                continue
            body = orjson.loads(payload)
            if "error" in body:
                self.errors.append(body["error"]["code"])
                continue
            for choice in body["choices"]:
                index = int(choice["delta"]["content"][:6])
                if index != self.next_index:
                    self.errors.append(f"chunk {index} where {self.next_index} was due")
                self.next_index = index + 1


class SlowClient:
    """A streamed chat request over a raw socket with a small receive buffer, read at the pace asked."""

    def __init__(self, port: int, model: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.http = h11.Connection(h11.CLIENT)
        self.checker = ChunkChecker()
        self.interception_id = ""
        self.ended = False
        body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True})
        headers = [
            ("Host", "127.0.0.1"),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
        ]
        request = h11.Request(method="POST", target="/openai/v1/chat/completions", headers=headers)
        self.sock.sendall(
            self.http.send(request) + self.http.send(h11.Data(data=body)) + self.http.send(h11.EndOfMessage())
        )

    def read(self, size: int) -> None:
        received = self.sock.recv(size)
        self.http.receive_data(received)
        while (event := self.http.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
            if isinstance(event, h11.Response):
                if event.status_code != 200:
                    raise AssertionError(f"HTTP {event.status_code}")
                self.interception_id = dict(event.headers)[b"x-aibridge-interception-id"].decode()
            elif isinstance(event, h11.Data):
                self.checker.feed(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self.ended = True
        if not received and not self.ended:
            raise AssertionError("connection closed before the end of the response")

    def read_to_end(self) -> None:
        while not self.ended:
            self.read(65536)
        self.sock.close()


def fast_answer_seconds(url: str, model: str) -> tuple[float, ChunkChecker]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    checker = ChunkChecker()
    started = time.monotonic()
    with httpx2.stream("POST", f"{url}/openai/v1/chat/completions", json=body, timeout=30) as response:
        for data in response.iter_bytes():
            checker.feed(data)
    return time.monotonic() - started, checker


def stream_written(client: redis.Redis, key: str) -> bool:
    return any(fields.get(b"k") == b"done" for _, fields in client.xrevrange(key, count=3))


def test_slow_clients_hold_a_bounded_amount_in_the_api_and_get_every_chunk(make_gateway, upstream, redis_url):
    deployment = make_gateway()
    # 7 MB as fast as the upstream can: one read brings up to 2 MB, which the worker writes as entries of at
    # most 64 KiB (an entry is what the API reads at least)
    slow_model, _ = upstream.scenario(SSEReply(answer_events(ANSWER_CHUNKS)))
    fast_model, _ = upstream.scenario(SSEReply(answer_events(FAST_CHUNKS)))
    api_pid = deployment.api.pid
    fast_alone, checker = fast_answer_seconds(deployment.url, fast_model)  # also warms the API up
    assert checker.done and checker.next_index == FAST_CHUNKS and not checker.errors
    before = rss_mb(api_pid)

    clients = [SlowClient(deployment.port, slow_model) for _ in range(SLOW_CLIENTS)]
    slow_until = time.monotonic() + SLOW_PHASE
    peak = before
    fast_during: list[tuple[float, ChunkChecker]] = []
    fast_request: threading.Thread | None = None
    store = redis.Redis.from_url(redis_url)
    try:
        while time.monotonic() < slow_until:
            for client in clients:
                client.read(SLOW_READ)
            peak = max(peak, rss_mb(api_pid))
            if fast_request is None and all(client.interception_id for client in clients):
                keys = [deployment.prefix + f"stream:{client.interception_id}" for client in clients]
                if all(stream_written(store, key) for key in keys):  # all 140 MB are in Redis
                    fast_request = threading.Thread(
                        target=lambda: fast_during.append(fast_answer_seconds(deployment.url, fast_model))
                    )
                    fast_request.start()
            time.sleep(0.25)
        assert fast_request is not None, "the worker did not write the slow answers within the slow phase"
        fast_request.join(30)
        during = rss_mb(api_pid)
        slow_taken = [client.checker.next_index for client in clients]
        readers = [threading.Thread(target=client.read_to_end) for client in clients]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(60)
    finally:
        store.close()
        for client in clients:
            client.sock.close()

    growth = max(peak, during) - before
    print(
        f"API RSS {before:.0f} MB before, peak {peak:.0f} MB: +{growth:.1f} MB for {SLOW_CLIENTS} slow streams"
    )
    print(f"fast answer alone {fast_alone:.2f}s, beside the slow clients {fast_during[0][0]:.2f}s")
    print(f"chunks taken by the slow clients in the slow phase: {min(slow_taken)}..{max(slow_taken)}")
    assert growth < RSS_GROWTH_BOUND_MB
    seconds, checker = fast_during[0]
    assert checker.done and checker.next_index == FAST_CHUNKS and not checker.errors
    assert seconds < max(2.0, 3 * fast_alone)
    assert max(slow_taken) < ANSWER_CHUNKS  # they were really slow
    for client in clients:
        assert client.ended and not client.checker.errors
        assert client.checker.done and client.checker.next_index == ANSWER_CHUNKS


def test_a_tail_holds_about_its_buffer_and_reads_on_only_as_its_relay_takes_entries(redis_url):
    """The hub against a real Redis, without processes: a stream of 400 KB, a tail with a 96 KiB buffer."""
    buffer_bytes, entry_data, entries = 96 * 1024, 4096, 100

    async def run() -> None:
        keys = RedisKeys(f"t-{uuid.uuid4().hex[:8]}:")
        redis = await connect(redis_url, keys)
        hub = StreamHub(redis, keys.api_wake, buffer_bytes)
        hub.start()
        slow_key, other_key = keys.stream(uuid.uuid4().hex), keys.stream(uuid.uuid4().hex)
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for index in range(entries):
                    message = StreamMessage(
                        kind=MessageKind.CHUNK, data=b"%06d" % index + b"x" * (entry_data - 6)
                    )
                    pipe.xadd(slow_key, dict(zip(*[iter(message.to_fields())] * 2, strict=True)))
                pipe.xadd(slow_key, {b"k": b"done"})
                written = await pipe.execute()
            slow = hub.follow(slow_key)
            other = hub.follow(other_key)
            async with redis.pipeline(transaction=False) as pipe:
                hub.wake(pipe)
                await pipe.execute()

            first = await slow.read(5)
            assert len(first) == FIRST_READ_COUNT  # entry sizes unknown yet; with them, over half the buffer
            await asyncio.sleep(0.5)  # the relay sends; the hub must not read this tail meanwhile
            assert slow.last_id == first[-1][0]

            await redis.xadd(other_key, {b"k": b"chunk", b"d": b"other"})
            started = time.monotonic()
            (only,) = await other.read(5)  # the paused tail holds up no other stream
            assert only[1].data == b"other" and time.monotonic() - started < 1

            paused_since = time.monotonic()
            received = [entry_id for entry_id, _ in first]
            while len(received) < entries + 1:
                batch = await slow.read(5)
                assert slow.heard_at >= paused_since  # the pause was no silence of the worker
                assert sum(len(message.data) + ENTRY_OVERHEAD for _, message in batch) <= buffer_bytes
                received += [entry_id for entry_id, _ in batch]
            assert received == written
        finally:
            await hub.stop()
            await redis.delete(slow_key, other_key)
            await redis.aclose()

    asyncio.run(run())


def test_a_client_idle_longer_than_the_heartbeat_timeout_is_not_told_the_worker_went_silent(
    make_gateway, upstream
):
    """While its client does not read, the API stops reading the stream (heartbeats included): that pause
    must not count as the worker's silence (AIBRIDGE_HEARTBEAT_TIMEOUT is 3 s here)."""
    deployment = make_gateway(AIBRIDGE_RELAY_BUFFER_BYTES=str(16 * 1024))  # the least: the most pauses
    model, _ = upstream.scenario(SSEReply(answer_events(ANSWER_CHUNKS), delay=0.001))
    client = SlowClient(deployment.port, model)
    while not client.checker.next_index:
        client.read(SLOW_READ)
    time.sleep(2 * float(deployment.env["AIBRIDGE_HEARTBEAT_TIMEOUT"]))  # the client idles
    client.read_to_end()
    assert not client.checker.errors
    assert client.checker.done and client.checker.next_index == ANSWER_CHUNKS
