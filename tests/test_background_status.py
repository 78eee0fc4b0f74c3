"""What a background response's stream says of it (api/background_status.py): its status and liveness from the
entries the API read, and where a stream resumes after a sequence number. Pure: entries built here."""

from __future__ import annotations

import orjson
import pytest

from api.background_status import Entry, Limits, Liveness, Seen, current, resume_after
from shared.background import BackgroundRecord, queued_response
from shared.families import Family, error_body
from shared.messages import MessageKind, StreamMessage
from shared.sse import EVENT_SEPARATOR

RESPONSE_ID = "resp_" + "ab" * 16
CREATED_MS = 1_700_000_000_000
LIMITS = Limits(pickup_ms=10_000, silence_ms=5_000)
RECORD = BackgroundRecord(
    actor_id="alice",
    created_at=CREATED_MS / 1000,
    response=queued_response(RESPONSE_ID, {"model": "m", "input": "hi"}, CREATED_MS / 1000),
)
OPENED = {"id": RESPONSE_ID, "object": "response", "status": "in_progress", "background": True, "output": []}


def event(kind: str, sequence: int, **fields: object) -> bytes:
    payload = {"type": kind, **fields, "sequence_number": sequence}
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload)


def chunk(*events: bytes) -> StreamMessage:
    return StreamMessage(kind=MessageKind.CHUNK, data=EVENT_SEPARATOR.join(events))


def delta(sequence: int) -> bytes:
    return event("response.output_text.delta", sequence, output_index=0, delta=f"w{sequence} ")


HEARTBEAT = StreamMessage(kind=MessageKind.HEARTBEAT)
OPEN = StreamMessage(kind=MessageKind.OPEN)
DONE = StreamMessage(kind=MessageKind.DONE)
OPENING = chunk(
    event("response.created", 0, response=OPENED), event("response.in_progress", 1, response=OPENED)
)


def at(ms_after_creation: int, seq: int = 0) -> bytes:
    return b"%d-%d" % (CREATED_MS + ms_after_creation, seq)


def seen(entries: list[Entry], now_after_creation: int, cancelled: bool = False) -> Seen:
    """What the API reads of a stream of ``entries`` (oldest first) that many ms after the response's creation."""
    return Seen(
        record=RECORD,
        cancelled=cancelled,
        first=entries[:8],
        last=entries[::-1][:8],
        now_ms=CREATED_MS + now_after_creation,
    )


def error_entry(message: str, code: str) -> StreamMessage:
    body = error_body(Family.OPENAI_RESPONSES, 500, message, "server_error", code)
    return StreamMessage(kind=MessageKind.ERROR, status=500, data=body)


def running(*extra: tuple[int, StreamMessage]) -> list[Entry]:
    """A stream that started 100 ms after creation: heartbeat, open and opening events, then ``extra``."""
    return [(at(100), HEARTBEAT), (at(150), OPEN), (at(150, 1), OPENING), *((at(ms), m) for ms, m in extra)]


def test_queued_while_no_worker_has_taken_it_within_pickup_and_silence():
    response, liveness = current(seen([], now_after_creation=14_000), LIMITS)
    assert liveness is Liveness.RUNNING
    assert response["status"] == "queued" and response["id"] == RESPONSE_ID


def test_queued_past_pickup_and_silence_is_dead():
    response, liveness = current(seen([], now_after_creation=15_001), LIMITS)
    assert liveness is Liveness.DEAD and response["status"] == "queued"


def test_cancelled_before_a_worker_took_it_is_ended_cancelled():
    response, liveness = current(seen([], now_after_creation=60_000, cancelled=True), LIMITS)
    assert liveness is Liveness.ENDED
    assert response["status"] == "cancelled" and response["id"] == RESPONSE_ID


def test_in_progress_with_a_fresh_newest_entry_shows_the_opened_response():
    entries = running((4_000, chunk(delta(2))), (8_000, HEARTBEAT))
    response, liveness = current(seen(entries, now_after_creation=12_000), LIMITS)
    assert liveness is Liveness.RUNNING
    assert response == {**OPENED, "status": "in_progress"}


def test_a_worker_silent_past_the_silence_limit_is_dead():
    entries = running((4_000, chunk(delta(2))), (8_000, HEARTBEAT))
    response, liveness = current(seen(entries, now_after_creation=13_001), LIMITS)
    assert liveness is Liveness.DEAD and response["status"] == "in_progress"


@pytest.mark.parametrize("end", ["response.completed", "response.failed", "response.incomplete"])
def test_an_ended_stream_shows_the_upstreams_last_word(end):
    status = end.removeprefix("response.")
    final = {**OPENED, "status": status, "output": [{"type": "message", "id": "msg_1"}]}
    last = chunk(delta(2), event(end, 3, response=final))
    entries = running((500, last), (500_000, DONE))  # long silent: an ended stream is not dead
    response, liveness = current(seen(entries, now_after_creation=1_000_000), LIMITS)
    assert liveness is Liveness.ENDED and response == final


def test_an_end_after_a_heartbeat_still_finds_the_last_chunk():
    final = {**OPENED, "status": "completed"}
    entries = running(
        (500, chunk(event("response.completed", 2, response=final))), (600, HEARTBEAT), (700, DONE)
    )
    assert current(seen(entries, now_after_creation=800), LIMITS) == (final, Liveness.ENDED)


def test_a_stream_ended_without_a_final_event_is_failed():
    entries = running((500, chunk(delta(2))), (600, DONE))
    response, liveness = current(seen(entries, now_after_creation=700), LIMITS)
    assert liveness is Liveness.ENDED and response["status"] == "failed"
    assert response["error"]["code"] == "server_error" and response["id"] == RESPONSE_ID


def test_an_error_entry_ends_it_failed_with_the_errors_code_and_message():
    lost = error_entry("the worker running this response stopped answering", "worker_lost")
    entries = running((500, chunk(delta(2))), (600, lost), (600, DONE))
    response, liveness = current(seen(entries, now_after_creation=700), LIMITS)
    assert liveness is Liveness.ENDED
    assert response == {
        **OPENED,
        "status": "failed",
        "error": {"code": "worker_lost", "message": "the worker running this response stopped answering"},
    }


def test_an_error_before_any_event_fails_the_queued_object():
    entries = [
        (at(100), HEARTBEAT),
        (at(200), error_entry("no key", "upstream_key_unusable")),
        (at(201), DONE),
    ]
    response, _ = current(seen(entries, now_after_creation=300), LIMITS)
    assert response["status"] == "failed" and response["error"]["code"] == "upstream_key_unusable"
    assert response["id"] == RESPONSE_ID and response["background"] is True


def test_an_error_body_that_is_not_json_is_a_server_error_with_its_text():
    entries = running(
        (500, StreamMessage(kind=MessageKind.ERROR, status=502, data=b"bad gateway")), (501, DONE)
    )
    response, _ = current(seen(entries, now_after_creation=600), LIMITS)
    assert response["error"] == {"code": "server_error", "message": "bad gateway"}


def test_an_error_entry_of_a_cancelled_response_ends_it_cancelled():
    cancelled = error_entry("the response was cancelled", "response_cancelled")
    entries = running((500, chunk(delta(2))), (600, cancelled), (600, DONE))
    response, liveness = current(seen(entries, now_after_creation=700, cancelled=True), LIMITS)
    assert liveness is Liveness.ENDED
    assert response["status"] == "cancelled" and response["error"] is None


# resume_after: a stream of an opening entry (events 0, 1), a heartbeat, an entry of events 2-4, a heartbeat
STREAM: list[Entry] = [
    (b"1700000000100-0", HEARTBEAT),
    (b"1700000000150-0", OPEN),
    (b"1700000000150-1", OPENING),
    (b"1700000000200-0", HEARTBEAT),
    (b"1700000000300-5", chunk(delta(2), delta(3), delta(4))),
    (b"1700000000400-0", HEARTBEAT),
]


@pytest.mark.parametrize(
    ("starting_after", "found"),
    [
        (-1, (b"1700000000150-0", (b"1700000000150-1", 0))),  # from the first event
        (0, (b"1700000000150-0", (b"1700000000150-1", 1))),  # within the opening entry
        (1, (b"1700000000300-4", (b"1700000000300-5", 0))),  # past a heartbeat, the next entry whole
        (2, (b"1700000000300-4", (b"1700000000300-5", 1))),
        (3, (b"1700000000300-4", (b"1700000000300-5", 2))),  # the entry's last event only
    ],
)
def test_resume_after_finds_the_first_event_past_the_sequence_number(starting_after, found):
    assert resume_after(STREAM, starting_after) == found


def test_resume_after_every_event_given_is_none():
    assert resume_after(STREAM, 4) is None
    assert resume_after(STREAM, 99) is None


def test_resume_after_an_entry_id_of_sequence_zero_reads_after_the_millisecond_before():
    entries: list[Entry] = [(b"1700000000300-0", chunk(delta(0), delta(1)))]
    before = b"1700000000299-%d" % (2**64 - 1)
    assert resume_after(entries, 0) == (before, (b"1700000000300-0", 1))


@pytest.mark.parametrize("end", [error_entry("upstream failed", "server_error"), DONE])
def test_resume_after_the_last_event_stops_at_an_error_or_the_end(end):
    entries = [*STREAM, (b"1700000000500-2", end)]
    assert resume_after(entries, 4) == (b"1700000000500-1", (b"", 0))
    assert resume_after(entries, 99) == (
        b"1700000000500-1",
        (b"", 0),
    )  # an end is relayed whatever the client has
