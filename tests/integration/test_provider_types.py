"""Every implemented provider type against a fake that speaks its wire format, through
`edge-agent run` (real Envoy + agent) with the official `openai` SDK: JSON and streams,
the provider's own path and credential header, and nothing of the client's."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_agent.demo.upstream import FakeOpenAIThread
from tests.fakes.anthropic import FakeAnthropicThread
from tests.fakes.bedrock import FakeBedrockThread
from tests.fakes.cohere import FakeCohereThread
from tests.fakes.gemini import FakeGeminiThread
from tests.helpers import Gateway, listen_block, running_gateway, started_fakes

openai = pytest.importorskip("openai")


@dataclass(frozen=True)
class Case:
    type: str
    base_path: str  # appended to the fake's URL
    chat_path: str  # what the provider must receive
    auth: tuple[str, str]  # header the provider must receive (value with {key})
    extra: dict[str, Any] | None = None
    stream_path: str | None = None  # when streams go elsewhere

    @property
    def paths(self) -> list[str]:
        """What the provider must receive for one JSON request, then one stream."""
        return [self.chat_path, self.stream_path or self.chat_path]


CASES = {
    "openai": Case("openai", "", "/v1/chat/completions", ("authorization", "Bearer {key}")),
    "openai_compatible": Case(
        "openai_compatible", "/v1", "/v1/chat/completions", ("authorization", "Bearer {key}")
    ),
    "mistral": Case("mistral", "/v1", "/v1/chat/completions", ("authorization", "Bearer {key}")),
    "groq": Case(
        "groq", "/openai/v1", "/openai/v1/chat/completions", ("authorization", "Bearer {key}")
    ),
    "together": Case("together", "/v1", "/v1/chat/completions", ("authorization", "Bearer {key}")),
    "azure_openai": Case(
        "azure_openai",
        "",
        "/openai/deployments/dep-1/chat/completions",
        ("api-key", "{key}"),
        {"api_version": "2024-10-21"},
    ),
    "anthropic": Case("anthropic", "", "/v1/messages", ("x-api-key", "{key}")),
    "cohere": Case("cohere", "", "/v2/chat", ("authorization", "Bearer {key}")),
    "gemini": Case(
        "gemini",
        "",
        "/v1beta/models/gemini-model:generateContent",
        ("x-goog-api-key", "{key}"),
        stream_path="/v1beta/models/gemini-model:streamGenerateContent",
    ),
    "bedrock": Case(
        "bedrock",
        "",
        "/model/bedrock-model/converse",
        ("authorization", "Bearer {key}"),
        stream_path="/model/bedrock-model/converse-stream",
    ),
    # SigV4 instead of a Bedrock API key: the fake verifies the signature.
    "bedrock_sigv4": Case(
        "bedrock",
        "",
        "/model/bedrock_sigv4-model/converse",
        ("x-amz-date", ""),
        {"region": "us-east-1"},
        stream_path="/model/bedrock_sigv4-model/converse-stream",
    ),
}


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Any]]:
    threads: dict[str, Any] = {}
    for name in CASES:
        key = f"sk-{name}"
        if name == "anthropic":
            threads[name] = FakeAnthropicThread(name=name, api_key=key)
        elif name == "cohere":
            threads[name] = FakeCohereThread(name=name, api_key=key)
        elif name == "gemini":
            threads[name] = FakeGeminiThread(name=name, api_key=key)
        elif name == "bedrock":
            threads[name] = FakeBedrockThread(name=name, api_key=key)
        elif name == "bedrock_sigv4":
            threads[name] = FakeBedrockThread(
                name=name, access_key_id="AKIDEXAMPLE", secret_access_key=key, region="us-east-1"
            )
        else:
            threads[name] = FakeOpenAIThread(name=name, api_key=key, azure=name == "azure_openai")
    with started_fakes(threads) as started:
        yield started


@pytest.fixture(scope="module")
def gw(fakes: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    providers, models, env = [], [], {}
    for name, case in CASES.items():
        model = "dep-1" if name == "azure_openai" else f"{name}-model"
        credentials: dict[str, str] = {"api_key_env": f"{name.upper()}_KEY"}
        if name == "bedrock_sigv4":
            credentials = {
                "aws_access_key_id_env": "SIGV4_ID",
                "aws_secret_access_key_env": f"{name.upper()}_KEY",
            }
            env["SIGV4_ID"] = "AKIDEXAMPLE"
        providers.append(
            {
                "name": name.replace("_", "-"),
                "type": case.type,
                "base_url": fakes[name].url + case.base_path,
                **credentials,
                **(case.extra or {}),
            }
        )
        models.append({"name": f"via-{name}", "targets": [f"{name.replace('_', '-')}/{model}"]})
        env[f"{name.upper()}_KEY"] = f"sk-{name}"
    config = {
        "listen": listen_block(),
        "providers": providers,
        "models": models,
        "cache": {"exact": {"enabled": False}, "semantic": {"enabled": False}},
    }
    tmp: Path = tmp_path_factory.mktemp("types")
    with running_gateway(tmp, config, env) as gateway:
        yield gateway


@pytest.mark.parametrize("name", list(CASES))
def test_json_and_stream_reach_the_provider_in_its_wire_format(
    name: str, gw: Gateway, fakes: dict[str, Any]
) -> None:
    case = CASES[name]
    fake = fakes[name]
    fake.reset()
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="client-key", max_retries=0)
    messages = [{"role": "user", "content": f"hello from {name}"}]
    reply = client.chat.completions.create(model=f"via-{name}", messages=messages, max_tokens=40)
    assert f"hello from {name}" in (reply.choices[0].message.content or "")
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    stream = client.chat.completions.create(
        model=f"via-{name}", messages=messages, max_tokens=40, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert f"hello from {name}" in streamed
    assert [seen.path for seen in fake.requests] == case.paths
    for seen in fake.requests:
        header, value = case.auth
        if value:
            assert seen.headers[header] == value.format(key=f"sk-{name}")
        else:
            assert seen.headers[header]  # signed: the fake checked the signature itself
        if name == "bedrock_sigv4":
            assert seen.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
        elif header != "authorization":
            assert "authorization" not in seen.headers  # the client's key never leaves
    if name == "azure_openai":
        assert "api-version=2024-10-21" in fake.requests[0].query


@pytest.mark.parametrize("name", list(CASES))
def test_anthropic_clients_reach_every_provider_type(
    name: str, gw: Gateway, fakes: dict[str, Any]
) -> None:
    anthropic = pytest.importorskip("anthropic")
    fake = fakes[name]
    fake.reset()
    client = anthropic.Anthropic(base_url=gw.url, api_key="client-key", max_retries=0)
    messages = [{"role": "user", "content": f"messages client to {name}"}]
    reply = client.messages.create(model=f"via-{name}", max_tokens=40, messages=messages)
    assert reply.type == "message" and f"messages client to {name}" in reply.content[0].text
    assert reply.usage.output_tokens > 0
    with client.messages.stream(model=f"via-{name}", max_tokens=40, messages=messages) as stream:
        final = stream.get_final_message()
    assert f"messages client to {name}" in final.content[0].text
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert [r.path for r in fake.requests] == CASES[name].paths
