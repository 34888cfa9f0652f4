"""The audit trail of a real gateway run (Envoy + agent): a record per request and per
admin change, finding types without values, and a file that verifies until a line is
removed or edited."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from edge_agent.demo.upstream import FakeOpenAIThread
from tests.helpers import http, listen_block, post_json, running_gateway, wait_for

EMAIL = "jane.doe@example.com"


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "audit", "verify", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_trail_of_a_run_verifies_and_tampering_is_named(tmp_path: Path) -> None:
    fake = FakeOpenAIThread(name="audited", api_key="sk-audit-provider")
    started = fake.start()
    trail = tmp_path / "audit" / "audit.jsonl"
    config = {
        "listen": listen_block(),
        "providers": [
            {
                "name": "p",
                "type": "openai",
                "base_url": started.url,
                "api_key_env": "AUDIT_KEY",
                "models": [{"name": "p-chat", "input_per_mtok": 1, "output_per_mtok": 2}],
            }
        ],
        "models": [{"name": "p-chat", "targets": ["p/p-chat"]}],
        "cache": {"semantic": {"enabled": False}},
        "guardrails": {"pii": {"action": "redact"}},
        "audit": {"sink": "file", "path": str(trail)},
    }
    try:
        with running_gateway(tmp_path, config, {"AUDIT_KEY": "sk-audit-provider"}) as gw:
            # No long digit runs of its own: a number may pass Luhn like a card number.
            text = f"write to {EMAIL} about order {uuid.uuid4().hex}"
            body = {"model": "p-chat", "messages": [{"role": "user", "content": text}]}
            assert post_json(f"{gw.url}/v1/chat/completions", body).status == 200
            hit = post_json(f"{gw.url}/v1/chat/completions", body)
            assert hit.headers["x-edge-agent-cache"] == "hit"
            missing = {**body, "model": "nope"}
            assert post_json(f"{gw.url}/v1/chat/completions", missing).status == 404
            purge = http("DELETE", f"{gw.admin_url}/admin/cache?model=p-chat")
            assert purge.status == 200

            def written() -> bool:
                return trail.exists() and trail.read_text().count("\n") >= 4

            wait_for(written, 10, "audit records")
    finally:
        fake.stop()
    raw = trail.read_text()
    records = [json.loads(line) for line in raw.splitlines()]
    requests = [r for r in records if r["type"] == "request"]
    assert [r["outcome"] for r in requests] == ["served", "cache_hit", "refused"]
    assert requests[0]["findings"] == {"EMAIL_ADDRESS": 1}
    assert requests[0]["input_tokens"] > 0 and requests[0]["provider"] == "p"
    assert requests[2]["reason"] == "model_not_found"
    [admin] = [r for r in records if r["type"] == "admin"]
    assert admin["action"] == "cache purged" and admin["model"] == "p-chat"
    assert admin["by"].startswith("loopback")
    assert EMAIL not in raw and "sk-audit-provider" not in raw
    ok = verify(trail)
    assert ok.returncode == 0, ok.stderr
    assert f"OK: {len(records)} records" in ok.stdout

    lines = raw.splitlines(keepends=True)
    trail.write_text("".join(lines[:1] + lines[2:]))  # one record removed
    removed = verify(trail)
    assert removed.returncode == 1 and "line 2:" in removed.stderr

    edited = lines[1].replace('"cache_hit"', '"served"')
    trail.write_text("".join([lines[0], edited, *lines[2:]]))
    changed = verify(trail)
    assert changed.returncode == 1
    assert "line 2: its hash does not match its content" in changed.stderr
