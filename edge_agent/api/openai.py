"""OpenAI wire format: endpoints, request validation, the models list, response checks.

Validation is deliberately shallow and lenient where providers differ: it checks what the
agent itself relies on (model, messages, the parameters that shape caching and streaming)
and the types OpenAI documents, and passes unknown fields through untouched. `null` on an
optional field means "absent" (OpenAI's schema marks them nullable and SDKs send null).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from edge_agent.api.errors import ApiError, clip, invalid_request


class Endpoint(enum.StrEnum):
    CHAT = "chat.completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    MODELS = "models"
    MESSAGES = "messages"  # Anthropic's Messages API (api/anthropic.py)


ENDPOINT_BY_PATH: dict[str, Endpoint] = {
    "/v1/chat/completions": Endpoint.CHAT,
    "/v1/completions": Endpoint.COMPLETIONS,
    "/v1/embeddings": Endpoint.EMBEDDINGS,
    "/v1/models": Endpoint.MODELS,
    "/v1/messages": Endpoint.MESSAGES,
}


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    endpoint: Endpoint
    body: dict[str, Any]  # the parsed JSON object, unchanged
    model: str
    stream: bool  # body "stream" is true
    include_usage: bool  # stream_options.include_usage is true
    temperature: float | None  # None when absent or null
    n: int  # 1 when absent or null


# --------------------------------------------------------------------------- messages

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_Check = Callable[[str, Any], None]


def _kind(value: Any) -> str:
    """JSON type of a value, worded like OpenAI's errors ("an integer", "null")."""
    t = type(value)
    if t is str:
        return "a string"
    if t is bool:  # before int: bool is an int subclass in Python, not in JSON
        return "a boolean"
    if t is int:
        return "an integer"
    if t is float:
        return "a decimal number"
    if t is list:
        return "an array"
    if t is dict:
        return "an object"
    if value is None:
        return "null"
    return t.__name__


def _show(value: Any) -> str:
    """A scalar as it appears in "but got X"."""
    t = type(value)
    if t is str:
        return f"'{clip(value, 64)}'"
    if t is bool:
        return "true" if value else "false"
    if t is int or t is float:
        return repr(value)
    return _kind(value)


def _missing(path: str, hint: str = "") -> ApiError:
    return invalid_request(
        f"Missing required parameter: '{path}'.{hint}", path, "missing_required_parameter"
    )


def _wrong_type(path: str, expected: str, value: Any) -> ApiError:
    return invalid_request(
        f"Invalid type for '{path}': expected {expected}, but got {_kind(value)} instead.",
        path,
        "invalid_type",
    )


def _wrong_value(path: str, expected: str, got: str) -> ApiError:
    return invalid_request(
        f"Invalid value for '{path}': expected {expected}, but got {got}.", path, "invalid_value"
    )


def _bounds(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" between {lo} and {hi}"
    if lo is not None:
        return f" greater than or equal to {lo}"
    if hi is not None:
        return f" less than or equal to {hi}"
    return ""


# --------------------------------------------------------------------------- field checks


def _number(lo: float, hi: float) -> _Check:
    expected = f"a number{_bounds(lo, hi)}"

    def check(path: str, value: Any) -> None:
        t = type(value)
        if t is not int and t is not float:
            raise _wrong_type(path, "a number", value)
        if not lo <= value <= hi:  # also false for NaN
            raise _wrong_value(path, expected, _show(value))

    return check


def _integer(lo: int | None, hi: int | None) -> _Check:
    expected = f"an integer{_bounds(lo, hi)}"

    def check(path: str, value: Any) -> None:
        if type(value) is not int:
            # orjson turns integers beyond 64 bits into floats: say "too large", not "decimal".
            if type(value) is float and value.is_integer() and abs(value) > _INT64_MAX:
                raise _wrong_value(path, expected, f"{value!r} (outside the 64-bit integer range)")
            raise _wrong_type(path, "an integer", value)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise _wrong_value(path, expected, _show(value))

    return check


def _check_bool(path: str, value: Any) -> None:
    if type(value) is not bool:
        raise _wrong_type(path, "a boolean", value)


def _check_string(path: str, value: Any) -> None:
    if type(value) is not str:
        raise _wrong_type(path, "a string", value)


def _check_object(path: str, value: Any) -> None:
    if type(value) is not dict:
        raise _wrong_type(path, "an object", value)


def _check_string_or_object(path: str, value: Any) -> None:
    if type(value) is not str and type(value) is not dict:
        raise _wrong_type(path, "a string or an object", value)


def _check_stop(path: str, value: Any) -> None:
    expected = "a string or an array of at most 4 strings"
    if type(value) is str:
        return
    if type(value) is not list:
        raise _wrong_type(path, expected, value)
    if len(value) > 4:
        raise _wrong_value(path, expected, f"an array of {len(value)} items")
    for i, item in enumerate(value):
        if type(item) is not str:
            raise _wrong_type(f"{path}[{i}]", "a string", item)


def _check_stream_options(path: str, value: Any) -> None:
    if type(value) is not dict:
        raise _wrong_type(path, "an object", value)
    include_usage = value.get("include_usage")
    if include_usage is not None and type(include_usage) is not bool:
        raise _wrong_type(f"{path}.include_usage", "a boolean", include_usage)


def _check_tools(path: str, value: Any) -> None:
    if type(value) is not list:
        raise _wrong_type(path, "an array of tool objects", value)
    for i, tool in enumerate(value):
        item = f"{path}[{i}]"
        if type(tool) is not dict:
            raise _wrong_type(item, "a tool object", tool)
        _required_string(tool, "type", item)


def _check_encoding_format(path: str, value: Any) -> None:
    if type(value) is not str:
        raise _wrong_type(path, "a string", value)
    if value not in ("float", "base64"):
        raise _wrong_value(path, "one of 'float', 'base64'", _show(value))


def _check_embeddings_stream(path: str, value: Any) -> None:
    _check_bool(path, value)
    if value:
        raise invalid_request(
            f"Invalid value for '{path}': stream is not supported for embeddings; "
            "remove it or set it to false.",
            path,
            "invalid_value",
        )


def _required_string(obj: dict[str, Any], key: str, parent: str, hint: str = "") -> str:
    path = f"{parent}.{key}" if parent else key
    if key not in obj:
        raise _missing(path, hint)
    value = obj[key]
    if type(value) is not str:
        raise _wrong_type(path, "a string", value)
    return value


_SEED = _integer(_INT64_MIN, _INT64_MAX)
_TEMPERATURE = _number(0, 2)
_TOP_P = _number(0, 1)
_PENALTY = _number(-2, 2)
_N = _integer(1, 128)

_CHAT_FIELDS: dict[str, _Check] = {
    "stream": _check_bool,
    "stream_options": _check_stream_options,
    "temperature": _TEMPERATURE,
    "top_p": _TOP_P,
    "n": _N,
    "max_tokens": _integer(1, None),
    "max_completion_tokens": _integer(1, None),
    "stop": _check_stop,
    "presence_penalty": _PENALTY,
    "frequency_penalty": _PENALTY,
    "seed": _SEED,
    "tools": _check_tools,
    "tool_choice": _check_string_or_object,
    "response_format": _check_object,
    "logprobs": _check_bool,
    "top_logprobs": _integer(0, 20),
    "user": _check_string,
}

_COMPLETIONS_FIELDS: dict[str, _Check] = {
    "stream": _check_bool,
    "stream_options": _check_stream_options,
    "temperature": _TEMPERATURE,
    "top_p": _TOP_P,
    "n": _N,
    # 0 is legal here: `echo: true, max_tokens: 0` is the usual way to score a prompt.
    "max_tokens": _integer(0, None),
    "stop": _check_stop,
    "presence_penalty": _PENALTY,
    "frequency_penalty": _PENALTY,
    "echo": _check_bool,
    "best_of": _integer(1, None),
    "logprobs": _integer(0, 5),
    "suffix": _check_string,
    "seed": _SEED,
    "user": _check_string,
}

_EMBEDDINGS_FIELDS: dict[str, _Check] = {
    "stream": _check_embeddings_stream,
    "encoding_format": _check_encoding_format,
    "dimensions": _integer(1, None),
    "user": _check_string,
}

# --------------------------------------------------------------------------- required fields

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_ROLE_SET = frozenset(_ROLES)
_PLAIN_ROLES = frozenset(("system", "developer", "user"))
_ROLES_TEXT = "one of " + ", ".join(f"'{r}'" for r in _ROLES)
_CONTENT = "a string or an array of content parts"


def _check_messages(body: dict[str, Any]) -> None:
    if "messages" not in body:
        raise _missing("messages")
    messages = body["messages"]
    if type(messages) is not list:
        raise _wrong_type("messages", "an array of message objects", messages)
    if not messages:
        raise _wrong_value("messages", "a non-empty array of message objects", "an empty array")
    for i, message in enumerate(messages):
        # Fast path for the common message (plain text from system/developer/user): nothing
        # else to check, and no JSON path string to build.
        if type(message) is dict and "name" not in message:
            role = message.get("role")
            if type(role) is str and role in _PLAIN_ROLES and type(message.get("content")) is str:
                continue
        _check_message(f"messages[{i}]", message)


def _check_message(path: str, message: Any) -> None:
    if type(message) is not dict:
        raise _wrong_type(path, "a message object", message)
    role = _required_string(message, "role", path)
    if role not in _ROLE_SET:
        raise _wrong_value(f"{path}.role", _ROLES_TEXT, _show(role))

    name = message.get("name")
    if name is not None and type(name) is not str:
        raise _wrong_type(f"{path}.name", "a string", name)

    carries_answer = False  # content may be null only when the assistant answered otherwise
    if role == "assistant":
        tool_calls = message.get("tool_calls")
        if tool_calls is not None:
            if type(tool_calls) is not list:
                raise _wrong_type(f"{path}.tool_calls", "an array of tool calls", tool_calls)
            for j, call in enumerate(tool_calls):
                if type(call) is not dict:
                    raise _wrong_type(f"{path}.tool_calls[{j}]", "a tool call object", call)
            carries_answer = bool(tool_calls)
        function_call = message.get("function_call")
        if function_call is not None:
            _check_object(f"{path}.function_call", function_call)
            carries_answer = True
        refusal = message.get("refusal")
        if refusal is not None:
            _check_string(f"{path}.refusal", refusal)
            carries_answer = True
    elif role == "tool":
        _required_string(message, "tool_call_id", path)
    elif role == "function":
        _required_string(message, "name", path)

    content = message.get("content")
    if content is None:
        if carries_answer:
            return
        if "content" not in message:
            hint = (
                " Assistant messages may omit it only when they carry 'tool_calls', "
                "'function_call' or 'refusal'."
                if role == "assistant"
                else ""
            )
            raise _missing(f"{path}.content", hint)
        raise _wrong_type(f"{path}.content", _CONTENT, content)
    if type(content) is str:
        return
    if type(content) is not list:
        raise _wrong_type(f"{path}.content", _CONTENT, content)
    for j, part in enumerate(content):
        part_path = f"{path}.content[{j}]"
        if type(part) is not dict:
            raise _wrong_type(part_path, "a content part object", part)
        _check_part(part_path, _required_string(part, "type", part_path), part)


# OpenAI's content part types, checked like every other field. Other types pass on:
# OpenAI-compatible servers add their own (vLLM's video_url, ...), and the provider
# judges those.
_PART_STRINGS = {"text": "text", "refusal": "refusal"}  # type → its string field
# type → (what its object must be, required string keys, optional string keys)
_PART_OBJECTS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "image_url": ("an object with a 'url'", ("url",), ("detail",)),
    "input_audio": ("an object with 'data' and 'format'", ("data", "format"), ()),
    "file": ("an object", (), ("file_data", "file_id", "filename")),
}


def _check_part(path: str, kind: str, part: dict[str, Any]) -> None:
    field = _PART_STRINGS.get(kind)
    if field is not None:
        _required_string(part, field, path)
        return
    spec = _PART_OBJECTS.get(kind)
    if spec is None:
        return
    what, required, optional = spec
    where = f"{path}.{kind}"
    obj = part.get(kind)
    if obj is None:
        raise _missing(where)
    if type(obj) is not dict:
        raise _wrong_type(where, what, obj)
    for key in required:
        _required_string(obj, key, where)
    for key in optional:
        value = obj.get(key)
        if value is not None and type(value) is not str:
            raise _wrong_type(f"{where}.{key}", "a string", value)


_TEXT_INPUT = (
    "a string, an array of strings, an array of integers, or an array of arrays of integers"
)


def _all_of_type(items: list[Any], t: type) -> bool:
    # map and list.count run in C (identity compare): token arrays hold thousands of ids.
    return list(map(type, items)).count(t) == len(items)


def _check_text_input(body: dict[str, Any], key: str, non_empty: bool) -> None:
    """`prompt` (completions) and `input` (embeddings): text or token ids, single or batch."""
    if key not in body:
        raise _missing(key)
    value = body[key]
    if type(value) is str:
        if non_empty and not value:
            raise _wrong_value(key, "a non-empty string", "an empty string")
        return
    if type(value) is not list:
        raise _wrong_type(key, _TEXT_INPUT, value)
    if not value:
        if non_empty:
            raise _wrong_value(key, f"a non-empty array ({_TEXT_INPUT})", "an empty array")
        return
    first = value[0]
    kind = type(first)
    if kind is str:
        if not _all_of_type(value, str):
            i, item = next((i, v) for i, v in enumerate(value) if type(v) is not str)
            raise _wrong_type(f"{key}[{i}]", f"a string, like '{key}[0]'", item)
        if non_empty and "" in value:
            raise _wrong_value(f"{key}[{value.index('')}]", "a non-empty string", "an empty string")
    elif kind is int:
        if not _all_of_type(value, int):
            i, item = next((i, v) for i, v in enumerate(value) if type(v) is not int)
            raise _wrong_type(f"{key}[{i}]", f"an integer token id, like '{key}[0]'", item)
    elif kind is list:
        for i, tokens in enumerate(value):
            item_path = f"{key}[{i}]"
            if type(tokens) is not list:
                raise _wrong_type(item_path, "an array of integer token ids", tokens)
            if non_empty and not tokens:
                raise _wrong_value(
                    item_path, "a non-empty array of integer token ids", "an empty array"
                )
            if not _all_of_type(tokens, int):
                j, tok = next((j, v) for j, v in enumerate(tokens) if type(v) is not int)
                raise _wrong_type(f"{item_path}[{j}]", "an integer token id", tok)
    else:
        raise _wrong_type(
            f"{key}[0]", "a string, an integer token id, or an array of token ids", first
        )


# --------------------------------------------------------------------------- parsing


def load_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise invalid_request(
            "Request body is empty: expected a JSON object with the request parameters.",
            code="invalid_json",
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
        if reason.startswith("str is not valid UTF-8"):
            # orjson's wording for bad bytes mentions surrogates; give the byte offset instead.
            try:
                bytes(raw).decode("utf-8")
            except UnicodeDecodeError as bad:
                reason = f"invalid UTF-8 at byte {bad.start}"
        raise invalid_request(
            f"Request body is not valid JSON: {reason}. Send a UTF-8 encoded JSON object.",
            code="invalid_json",
        ) from None
    if type(body) is not dict:
        got = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
        raise invalid_request(
            f"Request body must be a JSON object, got {got.get(type(body), 'null')}.",
            code="invalid_json",
        )
    return body


def _check_model(body: dict[str, Any]) -> str:
    model = _required_string(body, "model", "")
    if not model:
        raise _wrong_value("model", "a non-empty model name", "an empty string")
    return model


def parse_request(endpoint: Endpoint, raw: bytes) -> ParsedRequest:
    """Parse and validate a request body; raises ApiError (400) and nothing else."""
    body = load_object(raw)
    model = _check_model(body)
    if endpoint is Endpoint.CHAT:
        _check_messages(body)
        fields = _CHAT_FIELDS
    elif endpoint is Endpoint.COMPLETIONS:
        _check_text_input(body, "prompt", non_empty=False)
        fields = _COMPLETIONS_FIELDS
    elif endpoint is Endpoint.EMBEDDINGS:
        _check_text_input(body, "input", non_empty=True)
        fields = _EMBEDDINGS_FIELDS
    else:
        raise invalid_request(f"The {endpoint} endpoint takes no request body.")

    # Walk the body's keys (usually few) rather than the table; null means "absent".
    for key, value in body.items():
        check = fields.get(key)
        if check is not None and value is not None:
            check(key, value)

    if endpoint is Endpoint.EMBEDDINGS:
        return ParsedRequest(endpoint, body, model, False, False, None, 1)
    stream_options = body.get("stream_options")
    temperature = body.get("temperature")
    n = body.get("n")
    return ParsedRequest(
        endpoint=endpoint,
        body=body,
        model=model,
        stream=body.get("stream") is True,
        include_usage=type(stream_options) is dict and stream_options.get("include_usage") is True,
        temperature=None if temperature is None else float(temperature),
        n=1 if n is None else n,
    )


# --------------------------------------------------------------------------- responses


def models_list(models: Iterable[tuple[str, str]], created: int) -> bytes:
    """GET /v1/models body from (id, owned_by) pairs."""
    data = [
        {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}
        for model_id, owned_by in models
    ]
    return orjson.dumps({"object": "list", "data": data})


def _choices_complete(body: dict[str, Any], field: str, field_type: type) -> bool:
    choices = body.get("choices")
    if type(choices) is not list or not choices:
        return False
    for choice in choices:
        if type(choice) is not dict:
            return False
        if type(choice.get(field)) is not field_type or choice.get("finish_reason") is None:
            return False
    return True


def is_complete_response(endpoint: Endpoint, body: Any) -> bool:
    """True for a successful, complete answer that may be cached."""
    if type(body) is not dict or "error" in body:
        return False
    if endpoint is Endpoint.CHAT:
        return _choices_complete(body, "message", dict)
    if endpoint is Endpoint.COMPLETIONS:
        return _choices_complete(body, "text", str)
    if endpoint is Endpoint.EMBEDDINGS:
        data = body.get("data")
        if body.get("object") != "list" or type(data) is not list or not data:
            return False
        return all(type(item) is dict and "embedding" in item for item in data)
    if endpoint is Endpoint.MODELS:
        return body.get("object") == "list" and type(body.get("data")) is list
    return False
