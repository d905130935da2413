"""The simulator's Bedrock dialect as botocore's bedrock-runtime client sees it (real server).

botocore signs with SigV4, validates the requests against the service model, parses
the responses and decodes the binary event stream (checking every CRC), so it is the
referee of the wire format. It is synchronous: calls run in a thread while the
simulator serves on the test's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import botocore.config
import botocore.session
import httpx
import pytest
import pytest_asyncio
from botocore.eventstream import ChecksumMismatch
from botocore.exceptions import ClientError

from services.simulator.engine import completion_text

from .conftest import Sim

pytestmark = pytest.mark.asyncio(loop_scope="session")

USER: list[Any] = [{"role": "user", "content": [{"text": "one two three"}]}]  # 4 tokens
TOOLS: dict[str, Any] = {
    "tools": [
        {
            "toolSpec": {
                "name": "get_weather",
                "description": "Weather for a city",
                "inputSchema": {
                    "json": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                        "required": ["city"],
                    }
                },
            }
        }
    ],
    "toolChoice": {"any": {}},
}
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/bedrock/aws4_request, "
    "SignedHeaders=content-type;host;x-amz-date, Signature=" + "a" * 64
)


@pytest_asyncio.fixture(loop_scope="session")
async def bedrock(sim: Sim) -> AsyncIterator[Any]:
    client = botocore.session.get_session().create_client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=sim.url,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )
    yield client
    client.close()


async def run(fn: Callable[..., Any], **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, **kwargs)


async def stream_events(client: Any, **kwargs: Any) -> list[dict[str, Any]]:
    reply = await run(client.converse_stream, **kwargs)
    return await asyncio.to_thread(lambda: list(reply["stream"]))


async def test_converse_text_shape_and_usage(bedrock: Any, sim: Sim) -> None:
    reply = await run(bedrock.converse, modelId="sim?tokens=3", messages=USER)
    assert reply["output"]["message"] == {
        "role": "assistant",
        "content": [{"text": completion_text(3)}],
    }
    assert reply["stopReason"] == "end_turn"
    assert reply["usage"] == {"inputTokens": 4, "outputTokens": 3, "totalTokens": 7}
    assert reply["metrics"]["latencyMs"] >= 0
    assert sim.app.stats.last_headers["authorization"].startswith("AWS4-HMAC-SHA256 ")


async def test_stream_event_sequence(bedrock: Any) -> None:
    events = await stream_events(bedrock, modelId="sim?tokens=3", messages=USER)
    assert [next(iter(e)) for e in events] == [
        "messageStart",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    assert events[0]["messageStart"] == {"role": "assistant"}
    deltas = [e["contentBlockDelta"] for e in events if "contentBlockDelta" in e]
    assert "".join(d["delta"]["text"] for d in deltas) == completion_text(3)
    assert {d["contentBlockIndex"] for d in deltas} == {0}
    assert events[5]["messageStop"] == {"stopReason": "end_turn"}
    assert events[6]["metadata"]["usage"] == {"inputTokens": 4, "outputTokens": 3, "totalTokens": 7}


async def test_tool_call(bedrock: Any) -> None:
    reply = await run(bedrock.converse, modelId="sim", messages=USER, toolConfig=TOOLS)
    (block,) = reply["output"]["message"]["content"]
    assert block["toolUse"]["name"] == "get_weather"
    assert block["toolUse"]["input"] == {"city": "x", "days": 1}
    assert re.fullmatch(r"tooluse_[0-9a-f]+", block["toolUse"]["toolUseId"])
    assert reply["stopReason"] == "tool_use"


async def test_tool_call_stream(bedrock: Any) -> None:
    tools = {**TOOLS, "toolChoice": {"tool": {"name": "get_weather"}}}
    events = await stream_events(bedrock, modelId="sim", messages=USER, toolConfig=tools)
    start = events[1]["contentBlockStart"]
    assert start["contentBlockIndex"] == 0
    assert start["start"]["toolUse"]["name"] == "get_weather"
    fragments = [
        e["contentBlockDelta"]["delta"]["toolUse"]["input"]
        for e in events
        if "contentBlockDelta" in e
    ]
    assert len(fragments) >= 2
    assert json.loads("".join(fragments)) == {"city": "x", "days": 1}
    assert events[-2]["messageStop"] == {"stopReason": "tool_use"}


async def test_echo_shows_the_conversation_as_understood(bedrock: Any) -> None:
    messages = [
        {
            "role": "user",
            "content": [{"text": "look"}, {"image": {"format": "png", "source": {"bytes": PNG}}}],
        },
        {
            "role": "assistant",
            "content": [
                {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Oslo"}}}
            ],
        },
        {
            "role": "user",
            "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "sunny"}]}}],
        },
    ]
    reply = await run(
        bedrock.converse,
        modelId="sim?echo=1",
        system=[{"text": "be brief"}],
        messages=messages,
        toolConfig={"tools": TOOLS["tools"]},
    )
    text = reply["output"]["message"]["content"][0]["text"]
    assert text == (
        'system:be brief | user:look | image:image/png | call:get_weather({"city":"Oslo"}) '
        "| result:sunny"
    )


async def test_stop_sequence_and_max_tokens(bedrock: Any) -> None:
    stopped = await run(
        bedrock.converse,
        modelId="sim",
        messages=USER,
        inferenceConfig={"stopSequences": ["dolor"]},
    )
    assert stopped["output"]["message"]["content"][0]["text"] == "lorem ipsum "
    assert stopped["stopReason"] == "stop_sequence"
    cut = await run(
        bedrock.converse, modelId="sim", messages=USER, inferenceConfig={"maxTokens": 2}
    )
    assert cut["stopReason"] == "max_tokens" and cut["usage"]["outputTokens"] == 2


async def test_cached_tokens_are_reported_apart(bedrock: Any) -> None:
    reply = await run(bedrock.converse, modelId="sim?tokens=1&cached_tokens=3", messages=USER)
    assert reply["usage"]["inputTokens"] == 1
    assert reply["usage"]["cacheReadInputTokens"] == 3
    assert reply["usage"]["totalTokens"] == 5


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("400", 400, "ValidationException"),
        ("401", 403, "UnrecognizedClientException"),
        ("403", 403, "AccessDeniedException"),
        ("404", 404, "ResourceNotFoundException"),
        ("413", 400, "ValidationException"),
        ("429", 429, "ThrottlingException"),
        ("500", 500, "InternalServerException"),
        ("503", 503, "ServiceUnavailableException"),
        ("529", 503, "ServiceUnavailableException"),
    ],
)
async def test_error_faults(bedrock: Any, fault: str, status: int, code: str) -> None:
    with pytest.raises(ClientError) as caught:
        await run(bedrock.converse, modelId=f"sim?fault={fault}", messages=USER)
    error = caught.value.response
    assert error["Error"]["Code"] == code
    assert error["ResponseMetadata"]["HTTPStatusCode"] == status
    assert "simulated fault" in error["Error"]["Message"]


async def test_stream_error_fault_is_an_http_error(bedrock: Any) -> None:
    with pytest.raises(ClientError) as caught:
        await stream_events(bedrock, modelId="sim?fault=429", messages=USER)
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"


async def test_validation_errors(bedrock: Any) -> None:
    with pytest.raises(ClientError) as caught:
        await run(bedrock.converse, modelId="sim")
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "'messages'" in caught.value.response["Error"]["Message"]
    twice = [USER[0], USER[0]]
    with pytest.raises(ClientError, match="alternate between user and assistant"):
        await run(bedrock.converse, modelId="sim", messages=twice)


async def test_malformed_frame_fails_the_crc_check(bedrock: Any) -> None:
    with pytest.raises(ChecksumMismatch):
        await stream_events(bedrock, modelId="sim?fault=malformed&fault_after=1", messages=USER)


async def test_titan_embeddings(bedrock: Any) -> None:
    body = json.dumps({"inputText": "one two three", "dimensions": 256, "normalize": True})
    reply = await run(bedrock.invoke_model, modelId="amazon.titan-embed-text-v2:0", body=body)
    data = json.loads(reply["body"].read())
    assert len(data["embedding"]) == 256
    assert data["embeddingsByType"]["float"] == data["embedding"]
    assert data["inputTextTokenCount"] == 4
    with pytest.raises(ClientError, match="not a valid enum value"):
        await run(
            bedrock.invoke_model, modelId="t", body=json.dumps({"inputText": "a", "dimensions": 7})
        )


async def test_auth_is_required(sim: Sim) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as http:
        body = {"messages": USER}
        missing = await http.post("/model/sim/converse", json=body)
        assert missing.status_code == 403
        assert missing.headers["x-amzn-errortype"].startswith(
            "MissingAuthenticationTokenException:"
        )
        assert missing.json() == {"message": "Missing Authentication Token"}
        no_date = await http.post(
            "/model/sim/converse", json=body, headers={"authorization": SIGV4}
        )
        assert no_date.status_code == 403
        signed = await http.post(
            "/model/sim/converse",
            json=body,
            headers={"authorization": SIGV4, "x-amz-date": "20240101T000000Z"},
        )
        assert signed.status_code == 200
        bearer = await http.post(
            "/model/sim/converse",
            json=body,
            headers={"authorization": "Bearer bedrock-api-key", "x-sim-behavior": "tokens=2"},
        )
        assert bearer.status_code == 200
        assert bearer.json()["usage"]["outputTokens"] == 2
