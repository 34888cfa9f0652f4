"""The fake Bedrock Runtime, checked over raw HTTP (botocore-signed), with the official
botocore client, and end to end through the gateway's Bedrock codec and adapter."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError

from edge_agent.api.openai import Endpoint
from edge_agent.api.sse import SSEParser
from edge_agent.config import Provider
from edge_agent.providers.bedrock import BedrockAdapter
from edge_agent.translate.bedrock import CODEC
from tests.fakes.bedrock import EVENT_STREAM, FakeBedrock, FakeBedrockThread

KEY_ID = "AKIDFAKEBEDROCK"
SECRET = "fake/secret+key"
API_KEY = "ABSKbedrock-api-key"
REGION = "eu-west-3"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
PATH = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
STREAM_PATH = PATH + "-stream"
WEATHER = {
    "toolSpec": {
        "name": "get_weather",
        "description": "Weather for a city",
        "inputSchema": {
            "json": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "integer"},
                },
                "required": ["city", "unit"],
            }
        },
    }
}
OTHER = {"toolSpec": {"name": "lookup_stock", "inputSchema": {"json": {"type": "object"}}}}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeBedrock]:
    fake = FakeBedrockThread(
        name="bedrock",
        api_key=API_KEY,
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        region=REGION,
    )
    with fake as running:
        yield running


@pytest.fixture
def fake(server: FakeBedrock) -> Iterator[FakeBedrock]:
    server.reset()
    yield server
    server.reset()
    server.delay_s = 0.0
    server.stream_delay_s = 0.001
    server.models = None


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"text": text}]}


def request(text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"messages": [user(text)], **extra}


def signed(
    fake: FakeBedrock,
    path: str,
    raw: bytes,
    *,
    secret: str = SECRET,
    key_id: str = KEY_ID,
    region: str = REGION,
) -> dict[str, str]:
    """Headers botocore's signer puts on the request (independent of the adapter)."""
    host = f"127.0.0.1:{fake.port}"
    req = AWSRequest(
        method="POST",
        url=f"http://{host}{path}",
        data=raw,
        headers={"content-type": "application/json"},
    )
    SigV4Auth(Credentials(key_id, secret), "bedrock", region).add_auth(req)
    return dict(req.headers.items())


def post(
    fake: FakeBedrock,
    payload: Any,
    path: str = PATH,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    sign: bool = True,
) -> tuple[int, dict[str, str], bytes]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    sent = signed(fake, path, raw) if sign else {"content-type": "application/json"}
    if headers is not None:
        sent = {k: v for k, v in {**sent, **headers}.items() if v}
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        conn.request(method, path, raw if method == "POST" else None, sent)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def answer(fake: FakeBedrock, payload: dict[str, Any]) -> dict[str, Any]:
    status, headers, data = post(fake, payload)
    assert status == 200, data
    assert headers["content-type"] == "application/json"
    return json.loads(data)


def error_of(fake: FakeBedrock, payload: Any, status: int = 400, **kw: Any) -> tuple[str, str]:
    got, headers, data = post(fake, payload, **kw)
    assert got == status, data
    assert headers["content-type"] == "application/json"
    body = json.loads(data)
    assert set(body) == {"message"}
    return headers["x-amzn-errortype"].split(":")[0], body["message"]


def frames(data: bytes) -> list[tuple[dict[str, Any], Any]]:
    buffer = EventStreamBuffer()  # checks both CRCs of every frame
    buffer.add_data(data)
    return [(dict(m.headers), json.loads(m.payload)) for m in buffer]


def text_of(body: dict[str, Any]) -> str:
    return "".join(b.get("text", "") for b in body["output"]["message"]["content"])


# ---- authentication ---------------------------------------------------------------------


def test_sigv4_signed_request_is_answered(fake: FakeBedrock) -> None:
    body = answer(fake, request())
    assert body["output"]["message"] == {
        "role": "assistant",
        "content": [{"text": "Echo: hello there"}],
    }
    assert body["stopReason"] == "end_turn"
    assert body["usage"] == {"inputTokens": 2, "outputTokens": 3, "totalTokens": 5}
    assert body["metrics"]["latencyMs"] >= 0
    recorded = fake.requests[-1]
    assert recorded.path == PATH
    assert recorded.json() == request()


def test_bearer_api_key_is_accepted(fake: FakeBedrock) -> None:
    auth = {"authorization": f"Bearer {API_KEY}"}
    status, _, _ = post(fake, request(), headers=auth, sign=False)
    assert status == 200


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        ({}, "MissingAuthenticationTokenException"),
        ({"authorization": "Bearer wrong"}, "UnrecognizedClientException"),
    ],
)
def test_unauthenticated_requests_are_refused(
    fake: FakeBedrock, headers: dict[str, str], kind: str
) -> None:
    assert error_of(fake, request(), 403, headers=headers, sign=False)[0] == kind


def test_bad_signatures_are_refused(fake: FakeBedrock) -> None:
    raw = json.dumps(request()).encode()
    wrong_secret = signed(fake, PATH, raw, secret="nope")
    assert error_of(fake, raw, 403, headers=wrong_secret, sign=False)[0] == (
        "InvalidSignatureException"
    )
    wrong_key = signed(fake, PATH, raw, key_id="AKIDOTHER")
    assert error_of(fake, raw, 403, headers=wrong_key, sign=False)[0] == (
        "UnrecognizedClientException"
    )
    wrong_region = signed(fake, PATH, raw, region="us-east-1")
    assert error_of(fake, raw, 403, headers=wrong_region, sign=False)[0] == (
        "InvalidSignatureException"
    )
    # Signed for one body, sent with another.
    tampered = json.dumps(request("something else")).encode()
    headers = signed(fake, PATH, raw)
    assert error_of(fake, tampered, 403, headers=headers, sign=False)[0] == (
        "InvalidSignatureException"
    )
    # Signed for one model, sent to another.
    other = signed(fake, PATH.replace("haiku", "sonnet"), raw)
    assert error_of(fake, raw, 403, headers=other, sign=False)[0] == "InvalidSignatureException"


def test_session_tokens_are_checked() -> None:
    with FakeBedrockThread(
        access_key_id=KEY_ID, secret_access_key=SECRET, session_token="tok", region=REGION
    ) as fake:
        raw = json.dumps(request()).encode()
        assert post(fake, raw)[0] == 403  # signed without the token
        host = f"127.0.0.1:{fake.port}"
        req = AWSRequest(method="POST", url=f"http://{host}{PATH}", data=raw)
        SigV4Auth(Credentials(KEY_ID, SECRET, "tok"), "bedrock", REGION).add_auth(req)
        assert post(fake, raw, headers=dict(req.headers.items()), sign=False)[0] == 200


def test_no_configured_credentials_means_no_check() -> None:
    with FakeBedrockThread() as fake:
        assert post(fake, request(), sign=False)[0] == 200


# ---- the gateway's adapter and codec against the fake ------------------------------------


def bedrock_provider(fake: FakeBedrock) -> Provider:
    return Provider.model_construct(
        name="bedrock",
        type="bedrock",
        base_url=fake.url,
        region=REGION,
        aws_access_key_id_env="AK",
        aws_secret_access_key_env="SK",
        aws_session_token_env=None,
        api_key_env=None,
    )


def via_adapter(
    fake: FakeBedrock, chat: dict[str, Any], *, stream: bool = False, api_key: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    adapter = BedrockAdapter(bedrock_provider(fake), {"AK": KEY_ID, "SK": SECRET})
    body = json.dumps(CODEC.request_from_chat(chat, MODEL)).encode()
    path = adapter.upstream_path(Endpoint.CHAT, MODEL, "ignored=1", stream=stream)
    headers = dict(adapter.auth_headers(api_key, path=path, body=body))
    headers["content-type"] = "application/json"
    return post(fake, body, path=path, headers=headers, sign=False)


def test_adapter_signature_is_accepted(fake: FakeBedrock) -> None:
    chat = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
    status, _, data = via_adapter(fake, chat)
    assert status == 200, data
    assert fake.requests[-1].path == PATH
    assert fake.requests[-1].query == ""
    assert "SignedHeaders=host;x-amz-date," in fake.requests[-1].headers["authorization"]
    status, _, data = via_adapter(fake, chat, api_key=API_KEY)
    assert status == 200, data
    assert fake.requests[-1].headers["authorization"] == f"Bearer {API_KEY}"


def test_codec_round_trip_with_tools(fake: FakeBedrock) -> None:
    codec = CODEC
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": WEATHER["toolSpec"]["inputSchema"]["json"],
        },
    }
    chat: dict[str, Any] = {
        "model": "x",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
        ],
        "tools": [tool],
    }
    status, _, data = via_adapter(fake, chat)
    assert status == 200, data
    first = codec.response_to_chat(json.loads(data), MODEL)
    choice = first["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {
        "city": "Weather in Paris?",
        "unit": "celsius",
    }
    chat["messages"] += [
        choice["message"],
        {"role": "tool", "tool_call_id": call["id"], "content": "18C and sunny"},
    ]
    status, _, data = via_adapter(fake, chat)
    assert status == 200, data
    second = codec.response_to_chat(json.loads(data), MODEL)
    assert second["choices"][0]["message"]["content"] == "The tool said: 18C and sunny"
    assert second["choices"][0]["finish_reason"] == "stop"
    assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"]


def test_codec_stream_round_trip(fake: FakeBedrock) -> None:
    chat = {"model": "x", "messages": [{"role": "user", "content": "stream me please"}]}
    status, headers, data = via_adapter(fake, chat, stream=True)
    assert status == 200, data
    assert headers["content-type"] == EVENT_STREAM
    translator = CODEC.stream_to_chat(MODEL, include_usage=True)
    out = b"".join(translator.feed(data[i : i + 5]) for i in range(0, len(data), 5))
    out += translator.finish()
    events = [e.data for e in SSEParser().feed(out)]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Echo: stream me please"
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert translator.finished


def test_codec_reads_the_fake_errors(fake: FakeBedrock) -> None:
    fake.fail_next(429)
    status, headers, data = via_adapter(
        fake, {"model": "x", "messages": [{"role": "user", "content": "x"}]}
    )
    assert status == 429
    assert headers["x-amzn-errortype"].startswith("ThrottlingException")
    error = json.loads(CODEC.error_to_chat(status, data))["error"]
    assert error["type"] == "rate_limit_error"
    assert error["message"].startswith("Too many requests")


# ---- validation -------------------------------------------------------------------------

TOOL_TURNS = [
    user("weather?"),
    {
        "role": "assistant",
        "content": [{"toolUse": {"toolUseId": "tu_1", "name": "get_weather", "input": {}}}],
    },
]


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({}, "messages field is required"),
        ({"messages": []}, "messages field is required"),
        ({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}, "start with a user"),
        ({"messages": [{"role": "system", "content": [{"text": "x"}]}]}, "enum value set"),
        ({"messages": [user("a"), user("b")]}, "alternate"),
        ({"messages": [user("  ")]}, "is blank"),
        ({"messages": [{"role": "user", "content": []}]}, "at least one content block"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "at least one content block"),
        ({"messages": [{"role": "user", "content": [{"text": "a", "image": {}}]}]}, "exactly one"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"image": {"format": "bmp", "source": {"bytes": "AAAA"}}}],
                    }
                ]
            },
            "png, jpeg, gif, webp",
        ),
        (request(model=MODEL), "extraneous key [model]"),
        (request(stream=True), "extraneous key [stream]"),
        (request(inferenceConfig={"temperature": 1.5}), "temperature"),
        (request(inferenceConfig={"maxTokens": 0}), "maxTokens"),
        (request(inferenceConfig={"max_tokens": 5}), "inferenceConfig takes"),
        (request(toolConfig={"tools": []}), "at least one tool"),
        (
            request(toolConfig={"tools": [WEATHER], "toolChoice": {"tool": {"name": "nope"}}}),
            "is not a tool",
        ),
        (request(toolConfig={"tools": [WEATHER], "toolChoice": {"none": {}}}), "unsupported"),
        (
            {
                "messages": [
                    user("x"),
                    {"role": "assistant", "content": [{"text": "y"}]},
                    {
                        "role": "user",
                        "content": [
                            {"toolResult": {"toolUseId": "tu_9", "content": [{"text": "r"}]}}
                        ],
                    },
                ],
                "toolConfig": {"tools": [WEATHER]},
            },
            "do not match the toolUse",
        ),
        (
            {"messages": [*TOOL_TURNS, user("no result")], "toolConfig": {"tools": [WEATHER]}},
            "Expected toolResult blocks",
        ),
        (
            {
                "messages": [
                    *TOOL_TURNS,
                    {
                        "role": "user",
                        "content": [
                            {"toolResult": {"toolUseId": "tu_1", "content": [{"text": "r"}]}}
                        ],
                    },
                ]
            },
            "toolConfig field must be defined",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"toolUse": {"toolUseId": "t", "name": "n", "input": {}}}],
                    }
                ],
                "toolConfig": {"tools": [WEATHER]},
            },
            "only appear in assistant",
        ),
        (request(system=[{"text": ""}]), "is blank"),
    ],
)
def test_validation(fake: FakeBedrock, payload: dict[str, Any], needle: str) -> None:
    kind, message = error_of(fake, payload)
    assert kind == "ValidationException"
    assert needle in message


def test_unparseable_body(fake: FakeBedrock) -> None:
    assert error_of(fake, b"{not json")[0] == "SerializationException"
    assert error_of(fake, b"[1, 2]")[0] == "SerializationException"


def test_unknown_paths_methods_and_models(fake: FakeBedrock) -> None:
    assert post(fake, request(), path="/v1/chat/completions")[0] == 404
    assert post(fake, request(), path="/model/m/invoke")[0] == 404
    assert post(fake, request(), method="GET")[0] == 405
    fake.models = ["amazon.nova-lite-v1:0"]
    kind, _ = error_of(fake, request(), 404)
    assert kind == "ResourceNotFoundException"
    assert post(fake, request(), path="/model/amazon.nova-lite-v1%3A0/converse")[0] == 200


# ---- answers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "choice", "tool"),
    [
        ("What's the weather in Paris?", None, "get_weather"),
        ("please call lookup_stock for ACME", None, "lookup_stock"),
        ("hello", {"any": {}}, "get_weather"),
        ("hello", {"tool": {"name": "lookup_stock"}}, "lookup_stock"),
        ("hello", {"auto": {}}, None),
    ],
)
def test_tool_use(fake: FakeBedrock, text: str, choice: Any, tool: str | None) -> None:
    config: dict[str, Any] = {"tools": [WEATHER, OTHER]}
    if choice is not None:
        config["toolChoice"] = choice
    body = answer(fake, request(text, toolConfig=config))
    content = body["output"]["message"]["content"]
    uses = [b["toolUse"] for b in content if "toolUse" in b]
    if tool is None:
        assert uses == []
        assert body["stopReason"] == "end_turn"
        return
    assert body["stopReason"] == "tool_use"
    (use,) = uses
    assert use["name"] == tool
    assert use["toolUseId"].startswith("tooluse_")
    if tool == "get_weather":
        assert use["input"] == {"city": text, "unit": "celsius"}
    assert content[0] == {"text": f"I'll use the {tool} tool."}


def test_no_tool_without_tool_config(fake: FakeBedrock) -> None:
    body = answer(fake, request("What's the weather?"))
    assert text_of(body) == "Echo: What's the weather?"


def test_tool_result_is_answered(fake: FakeBedrock) -> None:
    result = {"toolUseId": "tu_1", "content": [{"text": "18C"}, {"json": {"wind": 3}}]}
    messages = [*TOOL_TURNS, {"role": "user", "content": [{"toolResult": result}]}]
    body = answer(fake, {"messages": messages, "toolConfig": {"tools": [WEATHER]}})
    assert text_of(body) == 'The tool said: 18C {"wind":3}'
    assert body["stopReason"] == "end_turn"


def test_max_tokens_and_stop_sequences(fake: FakeBedrock) -> None:
    body = answer(fake, request("one two three four", inferenceConfig={"maxTokens": 2}))
    assert text_of(body) == "Echo: one"
    assert body["stopReason"] == "max_tokens"
    assert body["usage"]["outputTokens"] == 2
    body = answer(fake, request("one two three", inferenceConfig={"stopSequences": ["two"]}))
    assert text_of(body) == "Echo: one "
    assert body["stopReason"] == "stop_sequence"


def test_usage_counts_system_and_history(fake: FakeBedrock) -> None:
    payload = {
        "system": [{"text": "be very brief"}],
        "messages": [user("a b"), {"role": "assistant", "content": [{"text": "c"}]}, user("d")],
    }
    usage = answer(fake, payload)["usage"]
    assert usage["inputTokens"] == 3 + 2 + 1 + 1
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]


# ---- streams ----------------------------------------------------------------------------


def test_stream_frames(fake: FakeBedrock) -> None:
    status, headers, data = post(
        fake, request("Weather in Paris?", toolConfig={"tools": [WEATHER]}), path=STREAM_PATH
    )
    assert status == 200
    assert headers["content-type"] == EVENT_STREAM
    decoded = frames(data)
    assert all(h[":message-type"] == "event" for h, _ in decoded)
    assert all(h[":content-type"] == "application/json" for h, _ in decoded)
    names = [h[":event-type"] for h, _ in decoded]
    assert names[0] == "messageStart"
    assert names[-2:] == ["messageStop", "metadata"]
    assert "contentBlockStart" in names
    payloads = [p for _, p in decoded]
    assert all("p" in p for p in payloads)  # Bedrock's padding field
    text = "".join(p["delta"].get("text", "") for p in payloads if "delta" in p)
    assert text == "I'll use the get_weather tool."
    tool_input = "".join(
        p["delta"]["toolUse"]["input"] for p in payloads if "toolUse" in p.get("delta", {})
    )
    assert json.loads(tool_input) == {"city": "Weather in Paris?", "unit": "celsius"}
    assert payloads[-2]["stopReason"] == "tool_use"
    assert payloads[-1]["usage"]["outputTokens"] > 0


def test_stream_break_sends_an_exception_frame(fake: FakeBedrock) -> None:
    fake.break_next_stream(after_events=2, exception="modelStreamErrorException", message="boom")
    _, _, data = post(fake, request("one two three"), path=STREAM_PATH)
    decoded = frames(data)
    assert len(decoded) == 3
    headers, payload = decoded[-1]
    assert headers[":message-type"] == "exception"
    assert headers[":exception-type"] == "modelStreamErrorException"
    assert payload == {"message": "boom"}


def test_truncated_stream_just_ends(fake: FakeBedrock) -> None:
    fake.truncate_streams = 1
    _, _, data = post(fake, request("one two three"), path=STREAM_PATH)
    assert [h[":event-type"] for h, _ in frames(data)] == ["messageStart", "contentBlockDelta"]
    _, _, data = post(fake, request("one two three"), path=STREAM_PATH)
    assert frames(data)[-1][0][":event-type"] == "metadata"


# ---- injected failures ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, "ThrottlingException"),
        (503, "ServiceUnavailableException"),
        (500, "InternalServerException"),
        (400, "ValidationException"),
    ],
)
def test_fail_next(fake: FakeBedrock, status: int, kind: str) -> None:
    fake.fail_next(status, 2, headers={"retry-after": "1"})
    for _ in range(2):
        got, headers, data = post(fake, request())
        assert got == status
        assert headers["x-amzn-errortype"].split(":")[0] == kind
        assert headers["retry-after"] == "1"
        assert json.loads(data)["message"]
    assert post(fake, request())[0] == 200


def test_fail_next_with_custom_body(fake: FakeBedrock) -> None:
    fake.fail_next(503, body="overloaded", error_type="ModelNotReadyException")
    status, headers, data = post(fake, request())
    assert (status, data) == (503, b"overloaded")
    assert headers["x-amzn-errortype"].startswith("ModelNotReadyException")


def test_reset_forgets_failures_and_requests(fake: FakeBedrock) -> None:
    fake.fail_next(500, 3)
    fake.break_next_stream()
    post(fake, request())
    fake.reset()
    assert fake.requests == []
    assert post(fake, request())[0] == 200
    _, _, data = post(fake, request(), path=STREAM_PATH)
    assert frames(data)[-1][0][":event-type"] == "metadata"


# ---- the official AWS SDK (botocore) as the client ---------------------------------------


@pytest.fixture
def client(fake: FakeBedrock) -> Any:
    return botocore.session.get_session().create_client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=fake.url,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        config=BotoConfig(retries={"max_attempts": 1, "mode": "standard"}),
    )


def test_botocore_converse(client: Any, fake: FakeBedrock) -> None:
    result = client.converse(modelId=MODEL, messages=[user("hi there")])
    assert result["output"]["message"]["content"] == [{"text": "Echo: hi there"}]
    assert result["usage"]["totalTokens"] == 5
    assert fake.requests[-1].path == PATH


def test_botocore_converse_stream(client: Any) -> None:
    result = client.converse_stream(
        modelId=MODEL, messages=[user("weather?")], toolConfig={"tools": [WEATHER]}
    )
    events = list(result["stream"])
    assert list(events[0]) == ["messageStart"]
    assert events[-1]["metadata"]["usage"]["outputTokens"] > 0
    starts = [e["contentBlockStart"] for e in events if "contentBlockStart" in e]
    assert starts[0]["start"]["toolUse"]["name"] == "get_weather"


def test_botocore_sees_errors(client: Any, fake: FakeBedrock) -> None:
    with pytest.raises(ClientError) as caught:
        client.converse(modelId=MODEL, messages=[user(" ")])
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    fake.break_next_stream(after_events=1)
    result = client.converse_stream(modelId=MODEL, messages=[user("hi")])
    with pytest.raises(EventStreamError) as stream_error:
        list(result["stream"])
    assert stream_error.value.response["Error"]["Code"] == "throttlingException"
