"""With client keys, a background response is its actor's alone: for any other it does not exist (retrieve,
stream, cancel, delete all 404 in OpenAI's shape, and change nothing); its actor reads it and deletes it."""

from __future__ import annotations

import httpx2
import openai
import pytest

from tests.background_replies import FINAL, text_reply, wait_for_status, words


@pytest.fixture(scope="module")
def keyed(make_gateway_module):
    return make_gateway_module(AIBRIDGE_AUTH="keys")


def client(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)


def assert_not_found(call) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        call()
    assert raised.value.status_code == 404
    assert raised.value.body["type"] == "invalid_request_error" and raised.value.body["code"] == "not_found"


def test_another_actor_cannot_see_cancel_or_delete_a_background_response(keyed, upstream):
    owner, stranger = client(keyed, keyed.create_key("ann")), client(keyed, keyed.create_key("bob"))
    model, _ = upstream.scenario(text_reply(words(20), delay=0.05))
    queued = owner.responses.create(model=model, input="hi", background=True)
    wait_for_status(owner, queued.id, {"in_progress"})
    for call in (
        lambda: stranger.responses.retrieve(queued.id),
        lambda: list(stranger.responses.retrieve(queued.id, stream=True)),
        lambda: stranger.responses.cancel(queued.id),
        lambda: stranger.responses.delete(queued.id),
    ):
        assert_not_found(call)
    final = wait_for_status(owner, queued.id, FINAL)  # neither cancelled nor deleted by the stranger
    assert final.status == "completed" and final.output_text == "".join(words(20))
    replay = list(owner.responses.retrieve(queued.id, stream=True))
    assert replay[-1].type == "response.completed" and replay[-1].response.id == queued.id


def test_its_actor_deletes_it_then_it_is_gone(keyed, upstream):
    key = keyed.create_key("cleo")
    owner = client(keyed, key)
    model, _ = upstream.scenario(text_reply(words(3)))
    queued = owner.responses.create(model=model, input="hi", background=True)
    assert wait_for_status(owner, queued.id, FINAL).status == "completed"
    deleted = httpx2.delete(
        f"{keyed.base_url}/responses/{queued.id}", headers={"Authorization": f"Bearer {key}"}, timeout=20
    )
    assert deleted.status_code == 200
    assert deleted.json() == {"id": queued.id, "object": "response", "deleted": True}
    assert_not_found(lambda: owner.responses.retrieve(queued.id))
    assert_not_found(lambda: list(owner.responses.retrieve(queued.id, stream=True)))
    assert_not_found(lambda: owner.responses.cancel(queued.id))
    assert_not_found(lambda: owner.responses.delete(queued.id))


def test_without_a_key_a_background_response_is_401(keyed, upstream):
    owner = client(keyed, keyed.create_key("dina"))
    model, _ = upstream.scenario(text_reply(words(2)))
    queued = owner.responses.create(model=model, input="hi", background=True)
    answer = httpx2.get(f"{keyed.base_url}/responses/{queued.id}", timeout=20)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"
