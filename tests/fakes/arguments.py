"""Tool-call arguments the fakes make up: deterministic values that fit a JSON schema.

Shared by the fakes whose providers take JSON-schema tool parameters (Anthropic, Bedrock,
Cohere); Gemini's fake fills its own OpenAPI-subset schemas.
"""

from __future__ import annotations

from typing import Any

STRING_ARGUMENT_CHARS = 100  # string arguments echo the question, this long at most


def placeholder(schema: Any, question: str) -> Any:
    """A value that fits a JSON-schema property well enough for tests."""
    if not isinstance(schema, dict):
        return None
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "string":
        return question[:STRING_ARGUMENT_CHARS] or "test"
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return tool_input(schema, question)
    return None


def tool_input(schema: Any, question: str) -> dict[str, Any]:
    """The schema's required properties, each with a placeholder."""
    if not isinstance(schema, dict):
        return {}
    properties = schema.get("properties")
    required = schema.get("required")
    if not isinstance(properties, dict) or not isinstance(required, list):
        return {}
    return {n: placeholder(properties[n], question) for n in required if n in properties}
