"""The usage chunk (``choices`` empty) reaches only a client that asked for it with
``stream_options.include_usage``, as real OpenAI does; the usage is recorded either way."""

from __future__ import annotations

from tests.fake_upstream import SSEReply, text_stream, tool_call_stream
from tests.test_recording import recorded

HI = [{"role": "user", "content": "hi"}]
USAGE = {"prompt_tokens": 19, "completion_tokens": 3, "total_tokens": 22}
ROUND_USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
ASK = {"stream_options": {"include_usage": True}}


def common_loop(gateway, model: str, **extra) -> tuple[str, object]:
    """The loop of most clients, which reads the first choice of every chunk; the text and the last chunk."""
    text = ""
    for part in gateway.client().chat.completions.create(model=model, messages=HI, stream=True, **extra):
        text += part.choices[0].delta.content or ""  # IndexError on a chunk without choices
        last = part
    return text, last


def all_chunks(gateway, model: str, **extra) -> list:
    return list(gateway.client().chat.completions.create(model=model, messages=HI, stream=True, **extra))


def recorded_usage(gateway, interception_id: str) -> list[tuple[int, int]]:
    record = recorded(gateway, interception_id)
    return [(usage["input_tokens"], usage["output_tokens"]) for usage in record["token_usages"]]


def test_the_usage_chunk_goes_only_to_a_client_that_asked_and_is_recorded_either_way(gateway, upstream):
    model, scenario = upstream.scenario(SSEReply(text_stream(["Hel", "lo"], usage=USAGE)))
    text, last = common_loop(gateway, model)
    assert text == "Hello"
    assert last.usage is None
    assert scenario.received[0].body["stream_options"] == {"include_usage": True}  # the gateway still asks
    assert recorded_usage(gateway, last.id) == [(19, 3)]

    parts = all_chunks(gateway, model, **ASK)
    assert all(part.choices for part in parts[:-1])
    assert parts[-1].choices == [] and parts[-1].usage.total_tokens == 22
    assert recorded_usage(gateway, parts[-1].id) == [(19, 3)]


def test_a_tool_loop_sends_one_usage_chunk_with_the_rounds_summed_to_a_client_that_asked(
    tool_gateway, upstream
):
    def two_rounds() -> str:
        model, _ = upstream.scenario(
            SSEReply(tool_call_stream("bmcp_test_echo", '{"text": "ping"}', usage=ROUND_USAGE)),
            SSEReply(text_stream(["pong"], usage=ROUND_USAGE)),
        )
        return model

    text, last = common_loop(tool_gateway, two_rounds())
    assert text == "pong"
    assert last.usage is None
    assert recorded_usage(tool_gateway, last.id) == [(10, 5), (10, 5)]

    parts = all_chunks(tool_gateway, two_rounds(), **ASK)
    assert [part.usage.total_tokens for part in parts if part.usage] == [30]  # not one per round
    assert parts[-1].choices == [] and parts[-1].usage.prompt_tokens == 20
    assert recorded_usage(tool_gateway, parts[-1].id) == [(10, 5), (10, 5)]
