"""Background responses (Responses ``background: true``) outliving the processes that serve them: an API
instance and a worker killed (SIGKILL) mid-way, and no worker at all, through real processes and the
official ``openai`` SDK. The tests' heartbeat timeout is 3 s (tests/gateway.py)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace

import httpx2
import openai

from api.background_status import last_chunk
from shared.background import interception_of
from shared.messages import MessageKind, StreamMessage
from tests.background_replies import FINAL, text_reply, wait_for_status, words
from tests.gateway import FAST_TIMEOUTS

HEARTBEAT_TIMEOUT = float(FAST_TIMEOUTS["AIBRIDGE_HEARTBEAT_TIMEOUT"])
MARGIN = 4.0  # seconds past the heartbeat window for an API to see a dead job, on a loaded 2-core machine
RESPONSES = 50
WORDS = 40


def async_client(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base_url}/openai/v1", api_key="unused", max_retries=0, timeout=60)


@dataclass
class Followed:
    """A background response as its client saw it: the events it got through the API it asked, and those
    it got after resuming on the survivor."""

    streamed: bool
    through_doomed: bool
    response_id: str | None = None
    got: list = field(default_factory=list)
    resumed: list = field(default_factory=list)
    cut: bool = False  # its stream broke with the API it was read through
    ended_at: float | None = None


async def poll_final(sdk: openai.AsyncOpenAI, response_id: str, deadline: float):
    while (response := await sdk.responses.retrieve(response_id)).status not in FINAL:
        assert time.monotonic() < deadline, f"{response_id} still {response.status} at the deadline"
        await asyncio.sleep(0.1)
    return response


async def run_through_kills(gateway, other_url: str, doomed_api, doomed_worker, model: str) -> tuple:
    survivor, doomed = async_client(gateway.url), async_client(other_url)
    followed = [Followed(streamed=n % 4 < 2, through_doomed=n % 2 == 1) for n in range(RESPONSES)]
    killed = asyncio.Event()

    async def follow(one: Followed) -> None:
        sdk = doomed if one.through_doomed else survivor
        if not one.streamed:
            one.response_id = (await sdk.responses.create(model=model, input="hi", background=True)).id
            return
        try:
            stream = await sdk.responses.create(model=model, input="hi", background=True, stream=True)
            async for event in stream:
                one.response_id = one.response_id or event.response.id
                one.got.append(event)
        except (httpx2.HTTPError, openai.APIConnectionError):
            one.cut = True
        if one.cut:
            await killed.wait()
            after = one.got[-1].sequence_number
            resumed = await survivor.responses.retrieve(one.response_id, stream=True, starting_after=after)
            one.resumed = [event async for event in resumed]
        one.ended_at = time.monotonic()

    def under_way() -> bool:
        return all(one.got if one.streamed else one.response_id for one in followed)

    tasks = [asyncio.create_task(follow(one)) for one in followed]
    deadline = time.monotonic() + 30
    while not under_way():
        assert time.monotonic() < deadline, "the responses did not get under way in 30 s"
        await asyncio.sleep(0.05)
    doomed_api.kill()
    doomed_worker.kill()
    killed_at = time.monotonic()
    killed.set()
    await asyncio.gather(*tasks)
    within = killed_at + HEARTBEAT_TIMEOUT + MARGIN + WORDS * 0.05
    finals = [await poll_final(survivor, one.response_id, within) for one in followed]
    return followed, finals, killed_at, time.monotonic()


def test_fifty_responses_survive_an_api_and_a_worker_killed_mid_way(make_gateway, upstream):
    gateway = make_gateway(workers=2)
    other_url, doomed_api = gateway.add_api()
    model, scenario = upstream.scenario(text_reply(words(WORDS), delay=0.05))
    started = time.monotonic()
    followed, finals, killed_at, settled_at = asyncio.run(
        run_through_kills(gateway, other_url, doomed_api, gateway.workers[1], model)
    )
    assert len(scenario.received) == RESPONSES
    statuses = [final.status for final in finals]
    assert set(statuses) <= {"completed", "failed"}, statuses
    for one, final in zip(followed, finals, strict=True):
        assert final.id == one.response_id and final.background is True
        if final.status == "completed":
            assert final.output_text == "".join(words(WORDS))
        else:
            assert final.error.code == "worker_lost" and "worker" in final.error.message
        if not one.streamed:
            continue
        events = one.got + one.resumed
        assert [event.sequence_number for event in events] == list(range(len(events))), one.response_id
        last = events[-1]
        if final.status == "completed":
            assert last.type == "response.completed" and last.response.output_text == final.output_text
        else:
            assert last.type == "error" and last.code == "worker_lost"
        assert one.ended_at - killed_at < HEARTBEAT_TIMEOUT + MARGIN + WORDS * 0.05
    failed = statuses.count("failed")
    cut = [one for one in followed if one.cut]
    print(
        f"\n{statuses.count('completed')} completed, {failed} failed (worker lost); {len(cut)} streams cut "
        f"and resumed; kill at {killed_at - started:.1f}s, all final {settled_at - killed_at:.1f}s after"
    )
    assert failed >= 1, "no response was on the killed worker"
    assert statuses.count("completed") >= 1, "no response was on the surviving worker"
    assert cut and all(one.resumed for one in cut), "no stream was cut by the API kill and resumed"
    assert any(one.cut and final.status == "completed" for one, final in zip(followed, finals, strict=True))


def test_a_worker_killed_mid_response_ends_it_failed_worker_lost(make_gateway, upstream):
    gateway = make_gateway()
    model, _ = upstream.scenario(text_reply(words(200), delay=0.05))
    sdk = gateway.client()
    seen = []
    with sdk.responses.create(model=model, input="hi", background=True, stream=True) as stream:
        for event in stream:
            seen.append(event)
            if len(seen) == 6:
                break
    response_id = seen[0].response.id
    gateway.workers[0].kill()
    killed_at = time.monotonic()
    rest = list(sdk.responses.retrieve(response_id, stream=True, starting_after=seen[-1].sequence_number))
    ended_in = time.monotonic() - killed_at
    assert HEARTBEAT_TIMEOUT - 1 < ended_in < HEARTBEAT_TIMEOUT + MARGIN
    events = seen + rest
    numbers = [event.sequence_number for event in events]
    assert numbers == list(range(len(numbers)))
    error = events[-1]
    assert error.type == "error" and error.code == "worker_lost" and error.message
    assert all(event.type == "response.output_text.delta" for event in events[3:-1])
    failed = sdk.responses.retrieve(response_id)
    assert failed.status == "failed" and failed.error.code == "worker_lost"
    (again,) = sdk.responses.retrieve(response_id, stream=True, starting_after=numbers[-2])
    assert again.type == "error" and again.sequence_number == numbers[-2] + 1 == error.sequence_number
    assert sdk.responses.retrieve(response_id).status == "failed"  # and it stays so


def test_a_response_no_worker_takes_fails_and_a_later_worker_does_not_run_it(make_gateway, upstream):
    gateway = make_gateway(workers=0, wait_ready=False, AIBRIDGE_PICKUP_TIMEOUT="1")
    model, scenario = upstream.scenario(text_reply(words(3)))
    sdk = gateway.client()
    queued = sdk.responses.create(model=model, input="hi", background=True)
    created_at = time.monotonic()
    assert queued.status == "queued" and sdk.responses.retrieve(queued.id).status == "queued"
    streamed = list(sdk.responses.create(model=model, input="hi", background=True, stream=True))
    failed = wait_for_status(sdk, queued.id, FINAL, timeout=1 + HEARTBEAT_TIMEOUT + MARGIN)
    waited = time.monotonic() - created_at
    assert failed.status == "failed" and failed.error.code == "no_worker_available" and failed.error.message
    assert 1 + HEARTBEAT_TIMEOUT - 0.5 < waited < 1 + HEARTBEAT_TIMEOUT + MARGIN
    assert streamed[-1].type == "error" and streamed[-1].code == "no_worker_available"
    assert [event.sequence_number for event in streamed] == list(range(len(streamed)))

    gateway.add_worker()
    gateway.wait_until(lambda: httpx2.get(f"{gateway.url}/readyz").status_code == 200, "a worker")
    job_id = interception_of(queued.id)
    gateway.wait_until(lambda: f"job {job_id} expired" in gateway.output_of("worker"), "the job dropped")
    assert scenario.received == []
    assert sdk.responses.retrieve(queued.id).error.code == "no_worker_available"


def test_a_resume_numbers_its_error_on_from_the_last_chunk_before_it():
    chunk = StreamMessage(kind=MessageKind.CHUNK, data=b'data: {"sequence_number": 7}')
    beat = StreamMessage(kind=MessageKind.HEARTBEAT)
    entries = [(b"1-0", chunk), (b"2-0", beat), (b"3-0", replace(chunk, data=b"data: {}"))]
    assert last_chunk(entries, b"2-5") == chunk.data
    assert last_chunk(entries, b"3-0") == b"data: {}"
    assert last_chunk(entries, b"0-9") is None
