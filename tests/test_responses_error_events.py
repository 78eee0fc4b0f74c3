"""The Responses family's error shapes: as an answer's body, and as the error event a stream ends with,
numbered on from the events the client got before it."""

from __future__ import annotations

import orjson

from shared.families import Family, error_body, error_event, next_sequence_number
from tests.responses_events import TEXT, USAGE, data_of, response_events


def test_the_responses_family_speaks_openai_errors_and_its_own_error_event():
    body = error_body(Family.OPENAI_RESPONSES, 502, "cut", "upstream_error", "upstream_cut")
    assert orjson.loads(body)["error"] == {
        "message": "cut",
        "type": "upstream_error",
        "code": "upstream_cut",
        "param": None,
    }
    assert data_of(error_event(Family.OPENAI_RESPONSES, body)) == {
        "type": "error",
        "code": "upstream_cut",
        "message": "cut",
        "param": None,
        "sequence_number": 0,  # nothing came before it
    }


def test_a_gateway_error_event_is_numbered_on_from_the_last_event_the_client_got():
    body = error_body(Family.OPENAI_RESPONSES, 502, "cut", "upstream_error", "upstream_cut")
    events = response_events("resp_a", [TEXT], 5, USAGE)
    chunk = b"\n\n".join(event.lines for event in events[:3])
    assert next_sequence_number(chunk) == 8
    assert data_of(error_event(Family.OPENAI_RESPONSES, body, chunk))["sequence_number"] == 8
    unspaced = b"event: response.output_text.delta\ndata:" + events[0].data
    assert next_sequence_number(unspaced + b"\n\nevent: x\ndata: [not json]") == 6
    assert next_sequence_number(b"") == 0 and next_sequence_number(b"data: {}") == 0
    numbered = orjson.dumps({**orjson.loads(body), "sequence_number": 3})
    assert data_of(error_event(Family.OPENAI_RESPONSES, numbered, chunk))["sequence_number"] == 3
    plain = data_of(error_event(Family.OPENAI_RESPONSES, b"not json", chunk))
    assert (plain["message"], plain["sequence_number"]) == ("not json", 8)
