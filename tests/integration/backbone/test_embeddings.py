"""``POST /v1/embeddings`` runs through the bus like chat and is accounted."""

from __future__ import annotations

import time

import openai
import pytest

from tests.stack import Stack

pytestmark = pytest.mark.integration


def test_embeddings_through_the_gateway_are_accounted(client: openai.OpenAI, stack: Stack) -> None:
    reply = client.embeddings.create(
        model="sim-embed", input=["first text", "second text"], encoding_format="float"
    )
    assert [d.index for d in reply.data] == [0, 1]
    assert len(reply.data[0].embedding) == 16
    assert reply.data[0].embedding != reply.data[1].embedding
    assert reply.usage.prompt_tokens > 0

    # The SDK's default asks for base64 and decodes it; the values agree.
    plain = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="x", max_retries=0)
    packed = plain.embeddings.create(model="sim-embed", input=["first text", "second text"])
    assert [round(v, 4) for v in packed.data[1].embedding] == [
        round(v, 4) for v in reply.data[1].embedding
    ]

    deadline = time.monotonic() + 30
    rows: list[list[str]] = []
    while time.monotonic() < deadline:
        rows = stack.sql(
            "SELECT count(), sum(prompt_tokens), sum(completion_tokens) FROM requests "
            "WHERE model = 'sim-embed' AND status = 'ok'"
        )
        if rows and int(rows[0][0]) >= 2:
            break
        time.sleep(0.2)
    assert int(rows[0][0]) == 2
    assert int(rows[0][1]) == 2 * reply.usage.prompt_tokens
    assert int(rows[0][2]) == 0


def test_embeddings_errors_are_openai_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="sim-embed", input=[])
    assert caught.value.body["param"] == "input"  # type: ignore[index]
