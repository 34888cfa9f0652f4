"""The sample config behind `make run`: offline, demo upstream, a routed miss then a hit."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.helpers import free_port, listen_block, post_json, running_gateway

DEMO = Path(__file__).resolve().parents[2] / "edge_agent" / "configs" / "demo.yaml"


def test_demo_config_serves_a_miss_then_a_hit_offline(tmp_path: Path) -> None:
    config = yaml.safe_load(DEMO.read_text())
    # Same config, other ports: a developer's `make run` may be up on the defaults.
    config["listen"] = listen_block()
    demo_port = free_port()
    config["demo_upstream"]["listen"] = f"127.0.0.1:{demo_port}"
    config["providers"][0]["base_url"] = f"http://127.0.0.1:{demo_port}"
    body = {"model": "demo", "messages": [{"role": "user", "content": "Hello, edge agent!"}]}
    with running_gateway(tmp_path, config, {"OPENAI_API_KEY": ""}) as gw:
        first = post_json(f"{gw.url}/v1/chat/completions", body)
        second = post_json(f"{gw.url}/v1/chat/completions", body)
        missing_key = post_json(f"{gw.url}/v1/chat/completions", {**body, "model": "gpt-4o-mini"})
        logs = gw.logs()
    assert first.status == 200 and first.headers["x-edge-agent-cache"] == "miss"
    assert "[demo upstream]" in first.json()["choices"][0]["message"]["content"]
    assert second.headers["x-edge-agent-cache"] == "hit"
    assert missing_key.status == 503
    assert "OPENAI_API_KEY" in missing_key.json()["error"]["message"]
    assert "DEMO upstream" in logs and "curl" in logs
