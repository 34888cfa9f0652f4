"""What every translation between the OpenAI chat format (the pivot) and another
schema shares: which chat fields change the answer, refusing what a target cannot carry
(a 400 naming the field, never a silent drop), tool-call arguments, image URLs, token
counts and provider error messages."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from edge_agent.api.errors import ApiError

# OpenAI chat fields that change the answer, and whether a request uses each. A provider
# schema without a counterpart for one names it (`refuse_unsupported`): the request is
# refused with a 400 naming the field rather than answered as if it were not there.
_USES: dict[str, Callable[[Any], bool]] = {
    "n": lambda v: v not in (None, 1),
    "logprobs": lambda v: bool(v),
    "top_logprobs": lambda v: v is not None,
    "frequency_penalty": lambda v: v not in (None, 0),
    "presence_penalty": lambda v: v not in (None, 0),
    "logit_bias": lambda v: bool(v),
    "audio": lambda v: v is not None,
    "modalities": lambda v: v not in (None, ["text"]),
    "prediction": lambda v: v is not None,
    "functions": lambda v: v is not None,
    "function_call": lambda v: v is not None,
    "web_search_options": lambda v: v is not None,
    "reasoning_effort": lambda v: v is not None,
    "verbosity": lambda v: v is not None,
    "parallel_tool_calls": lambda v: v is False,
    "response_format": lambda v: not (isinstance(v, dict) and v.get("type") == "text"),
}


def refuse_unsupported(
    body: dict[str, Any], fields: tuple[str, ...], refuse: Callable[[str], ApiError]
) -> None:
    """Raise `refuse(field)` for the first of `fields` the request uses."""
    for field in fields:
        value = body.get(field)
        if value is not None and _USES[field](value):
            raise refuse(field)


def untranslatable(field: str, source: str, target: str, why: str = "") -> ApiError:
    detail = f" ({why})" if why else ""
    return ApiError(
        400,
        f"'{field}' cannot be translated from the {source} API to this model's provider, "
        f"which speaks the {target} API{detail}. Remove it, or ask for a model served by "
        f"a {source}-type provider.",
        param=field,
        code="untranslatable_parameter",
    )


def str_or_empty(value: object) -> str:
    return value if isinstance(value, str) else ""


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


Refuse = Callable[[str, str], ApiError]


def call_arguments(function: dict[str, Any], where: str, refuse: Refuse) -> dict[str, Any]:
    """An OpenAI tool call's arguments as the object every other schema wants."""
    try:
        arguments = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        raise refuse(f"{where}.function.arguments", "the arguments are not valid JSON") from None
    if not isinstance(arguments, dict):
        raise refuse(f"{where}.function.arguments", "the arguments must be a JSON object")
    return arguments


def image_url_of(part: dict[str, Any], where: str, refuse: Refuse) -> str:
    """The URL of an OpenAI image_url content part (an object, or a bare string)."""
    image = part.get("image_url") or {}
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise refuse(f"{where}.image_url.url", "expected a URL string")
    return url


def count(value: object) -> int | None:
    """A token count as providers send it: absent/null is 0; anything but a sane
    non-negative integer is None (unknown)."""
    if value is None:
        return 0
    if type(value) is not int or not 0 <= value < 1 << 53:
        return None
    return value


def error_message(body: bytes) -> str:
    """What a provider's error answer says, in any shape, as one bounded line."""
    return error_parts(body, anthropic=False)[0]


def error_parts(body: bytes, *, anthropic: bool) -> tuple[str, str | None]:
    try:
        parsed = orjson.loads(body)
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            kind = error.get("type")
            return error["message"], kind if isinstance(kind, str) else None
        # Other JSON shapes servers use: {"detail": "..."} (FastAPI), {"message": "..."},
        # {"error": "..."}.
        for key in ("detail", "message", "error"):
            value = parsed.get(key)
            if isinstance(value, str) and value.strip():
                return f"The provider answered: {clip_line(value)}", None
    except (orjson.JSONDecodeError, AttributeError):
        pass
    text = clip_line(body[:2000].decode("utf-8", "replace"))
    return f"The provider answered: {text}" if text else "The provider answered an error.", None


def plain_error_message(body: bytes, keys: tuple[str, ...] = ("message",)) -> str:
    """The message of a provider error whose JSON puts it under one of `keys` (or, from
    a proxy in front, OpenAI's `error.message`); else the start of the body."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        for key in keys:
            if isinstance(parsed.get(key), str) and parsed[key]:
                return str(parsed[key])
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    text = body[:500].decode("utf-8", "replace").strip()
    return f"The provider answered: {text}" if text else "The provider answered an error."


def clip_line(text: str) -> str:
    # One line, bounded: a provider's HTML error page must not flood the client's error.
    text = " ".join(text.split())
    return text if len(text) <= 500 else text[:497] + "..."


def openai_error(message: str, kind: str, code: str | None = None) -> bytes:
    """OpenAI's error envelope."""
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


# OpenAI chat fields that change the answer and that no other schema so far can carry;
# each translation adds its own (`(*OPENAI_ONLY, "reasoning_effort")`).
OPENAI_ONLY = (
    "n",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "audio",
    "modalities",
    "prediction",
    "functions",
    "function_call",
    "web_search_options",
)
# How one OpenAI content part (other than text) becomes a target's block: (part, where).
PartReader = Callable[[dict[str, Any], str], dict[str, Any]]


def user_parts(
    content: Any, path: str, refuse: Refuse, readers: Mapping[str, PartReader], target: str
) -> list[dict[str, Any]]:
    """A user turn's OpenAI content as `target`'s blocks: text as {"text": ...} (blank
    text left out: targets refuse empty blocks), other part kinds through `readers`,
    anything else refused naming the part."""
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise refuse(path, "expected a string or a list of content parts")
    blocks: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        where = f"{path}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = str(part.get("text") or "")
            if text:
                blocks.append({"text": text})
        elif isinstance(kind, str) and kind in readers:
            blocks.append(readers[kind](part, where))
        else:
            raise refuse(where, f"content part type {kind!r} has no {target} counterpart")
    return blocks


def text_of(content: Any, path: str, refuse: Refuse, kinds: tuple[str, ...] = ("text",)) -> str:
    """A string, or content parts of `kinds` (their text under the kind's own key), as
    one string: for the roles whose target content is text only."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise refuse(path, "expected a string or a list of text parts")
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in kinds:
            raise refuse(f"{path}[{i}]", f"content part type {kind!r} is not allowed here")
        texts.append(str(part.get(kind) or ""))
    return "\n".join(texts)


def chat_usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    """OpenAI's usage object: prompt tokens include the cached ones (as OpenAI counts)."""
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def requested_max_tokens(body: dict[str, Any]) -> Any:
    """The answer's token cap as the request asks for it: `max_completion_tokens`, else
    the older `max_tokens` (as sent: each target checks it its own way)."""
    return body.get("max_completion_tokens") or body.get("max_tokens")


def stop_sequences(body: dict[str, Any]) -> list[Any] | None:
    """The request's `stop` (OpenAI takes one string or a list) as a list; None when the
    request sets none."""
    stop = body.get("stop")
    if not stop:
        return None
    return [stop] if isinstance(stop, str) else list(stop)


def tool_function(tool: Any, path: str, refuse: Refuse) -> dict[str, Any]:
    """The function of an OpenAI tool; other tool types have no counterpart anywhere."""
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise refuse(path, "only function tools translate")
    # A function of the wrong shape fails where it is read, as a malformed request.
    return tool.get("function") or {}  # type: ignore[no-any-return]


def tool_parameters(function: dict[str, Any]) -> Any:
    """Its parameters' JSON Schema; a function without any takes an empty object."""
    return function.get("parameters") or {"type": "object", "properties": {}}
