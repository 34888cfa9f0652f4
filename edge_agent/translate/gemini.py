"""OpenAI chat ⇄ the Gemini API (the codec of providers/gemini.py): requests, whole
answers, usage, errors and streams, sans-IO."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson

from edge_agent.api.errors import ApiError
from edge_agent.api.sse import encode_event
from edge_agent.providers.base import Codec
from edge_agent.translate import common as translate_common
from edge_agent.translate.common import (
    OPENAI_ONLY,
    call_arguments,
    chat_usage,
    image_url_of,
    refuse_unsupported,
    requested_max_tokens,
    stop_sequences,
    tool_function,
    user_parts,
)
from edge_agent.translate.gemini_schema import root_schema
from edge_agent.translate.stream import ChatChunkWriter, completion, event_object

SKIP_SIGNATURE = "skip_thought_signature_validator"

_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
# OpenAI chat fields with no Gemini counterpart that change the answer.
_OPENAI_ONLY = (*OPENAI_ONLY, "reasoning_effort", "verbosity")
_IMAGE_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "heic": "image/heic",
    "heif": "image/heif",
}
_AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3"}
# Google's status strings → OpenAI's error types (the HTTP status stays unchanged).
_ERROR_TYPES = {
    "INVALID_ARGUMENT": "invalid_request_error",
    "FAILED_PRECONDITION": "invalid_request_error",
    "OUT_OF_RANGE": "invalid_request_error",
    "UNAUTHENTICATED": "authentication_error",
    "PERMISSION_DENIED": "permission_error",
    "NOT_FOUND": "not_found_error",
    "RESOURCE_EXHAUSTED": "rate_limit_error",
}

# ...and by HTTP status when the body names none.
_STATUS_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def _refuse(field: str, why: str = "") -> ApiError:
    return translate_common.untranslatable(field, "OpenAI", "Gemini", why)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# =========================================================================== requests


def _text_of(content: Any, path: str) -> str:
    """Text of a system/tool/assistant content (string or text parts)."""
    return translate_common.text_of(content, path, _refuse, ("text", "refusal"))


def _data_url(url: str, path: str) -> dict[str, Any]:
    head, sep, data = url.partition(",")
    mime = head[5:].split(";")[0]
    if not sep or ";base64" not in head or not mime:
        raise _refuse(path, "data URLs must be base64-encoded and name their media type")
    return {"inlineData": {"mimeType": mime, "data": data}}


def _image_part(url: str, path: str) -> dict[str, Any]:
    if url.startswith("data:"):
        return _data_url(url, path)
    if url.startswith("https://"):
        # fileData needs the media type and OpenAI does not send one: the extension decides.
        ext = urlsplit(url).path.rpartition(".")[2].lower()
        if ext in _IMAGE_TYPES:
            return {"fileData": {"mimeType": _IMAGE_TYPES[ext], "fileUri": url}}
        raise _refuse(
            path,
            "Gemini needs the image's media type; use a data: URL, or an https URL "
            "ending in .png, .jpg, .jpeg, .webp, .gif, .heic or .heif",
        )
    raise _refuse(path, "an image URL must be https:// or a base64 data: URL")


def _image_url_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    return _image_part(image_url_of(part, where, _refuse), f"{where}.image_url.url")


def _audio_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    audio = part.get("input_audio") or {}
    mime = _AUDIO_TYPES.get(str(audio.get("format")))
    if mime is None or not isinstance(audio.get("data"), str):
        raise _refuse(f"{where}.input_audio", "expected base64 data in wav or mp3")
    return {"inlineData": {"mimeType": mime, "data": audio["data"]}}


def _file_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    data = (part.get("file") or {}).get("file_data")
    if not isinstance(data, str) or not data.startswith("data:"):
        raise _refuse(f"{where}.file", "only inline file_data (a data: URL) translates")
    return _data_url(data, f"{where}.file.file_data")


_PART_READERS = {"image_url": _image_url_part, "input_audio": _audio_part, "file": _file_part}


def _user_parts(content: Any, path: str) -> list[dict[str, Any]]:
    return user_parts(content, path, _refuse, _PART_READERS, "Gemini")


def _signature(call: dict[str, Any]) -> str | None:
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    sig = google.get("thought_signature") if isinstance(google, dict) else None
    return sig if isinstance(sig, str) and sig else None


def _call_parts(calls: Any, path: str, names: dict[str, str]) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise _refuse(path, "expected a list of tool calls")
    parts: list[dict[str, Any]] = []
    for i, call in enumerate(calls):
        where = f"{path}[{i}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _refuse(where, "only function tool calls translate")
        args = call_arguments(function, where, _refuse)
        names[str(call.get("id", ""))] = function["name"]
        part: dict[str, Any] = {"functionCall": {"name": function["name"], "args": args}}
        sig = _signature(call)
        if sig is not None:
            part["thoughtSignature"] = sig
        parts.append(part)
    # Gemini 3 rejects a call turn without a signature; histories from elsewhere have none.
    if parts and not any("thoughtSignature" in p for p in parts):
        parts[0]["thoughtSignature"] = SKIP_SIGNATURE
    return parts


def _tool_response(content: Any, path: str) -> Any:
    text = _text_of(content, path)
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return parsed if isinstance(parsed, dict) else text


def _contents(messages: Any) -> tuple[list[str], list[dict[str, Any]]]:
    if not isinstance(messages, list):
        raise _refuse("messages", "expected a list of messages")
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id → function name, the latest call wins

    def append(role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return  # an empty message carries nothing, and Gemini refuses empty parts
        # Gemini wants one content per turn: consecutive same-role messages are merged.
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for i, message in enumerate(messages):
        path = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _refuse(path, "expected a message object")
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text = _text_of(content, f"{path}.content")
            if text:
                system.append(text)
        elif role == "user":
            append("user", _user_parts(content, f"{path}.content"))
        elif role == "assistant":
            if message.get("function_call"):
                raise _refuse(f"{path}.function_call", "use tool_calls")
            text = _text_of(content, f"{path}.content")
            parts = [{"text": text}] if text else []
            if message.get("tool_calls"):
                parts += _call_parts(message["tool_calls"], f"{path}.tool_calls", names)
            append("model", parts)
        elif role == "tool":
            call_id = str(message.get("tool_call_id", ""))
            if call_id not in names:
                raise _refuse(
                    f"{path}.tool_call_id",
                    "Gemini names tool results by function: the id must match an earlier "
                    "assistant tool call",
                )
            response = {"output": _tool_response(content, f"{path}.content")}
            append("user", [{"functionResponse": {"name": names[call_id], "response": response}}])
        else:
            raise _refuse(f"{path}.role", f"role {role!r} has no Gemini counterpart")
    if not contents:
        raise _refuse("messages", "Gemini needs at least one non-empty user or assistant message")
    return system, contents


def _function(tool: Any, path: str) -> dict[str, Any]:
    function = tool_function(tool, path, _refuse)
    if not isinstance(function.get("name"), str):
        raise _refuse(f"{path}.function.name", "expected the function's name")
    out: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        out["description"] = str(function["description"])
    params = function.get("parameters")
    if params is not None:
        converted = root_schema(params, f"{path}.function.parameters")
        # Gemini refuses an OBJECT without properties: a function without parameters
        # declares none at all.
        if converted.get("type") != "object" or converted.get("properties"):
            out["parameters"] = converted
    return out


def _tool_config(choice: Any, tools: list[dict[str, Any]]) -> dict[str, Any]:
    if choice is None or choice == "auto":
        return {"mode": "AUTO"}
    if choice == "none":
        return {"mode": "NONE"}
    if choice == "required":
        return {"mode": "ANY"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if not isinstance(name, str) or name not in {t["name"] for t in tools}:
            raise _refuse("tool_choice.function.name", "name one of the declared tools")
        return {"mode": "ANY", "allowedFunctionNames": [name]}
    raise _refuse("tool_choice")


def chat_to_gemini(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request as a Gemini GenerateContentRequest (the model is in the path)."""
    refuse_unsupported(body, _OPENAI_ONLY, _refuse)
    system, contents = _contents(body.get("messages"))
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": t} for t in system]}

    config: dict[str, Any] = {}
    max_tokens = requested_max_tokens(body)
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    stop = stop_sequences(body)
    if stop is not None:
        config["stopSequences"] = stop
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        if fmt["type"] == "json_object":
            config["responseMimeType"] = "application/json"
        elif fmt["type"] == "json_schema":
            spec = fmt.get("json_schema") or {}
            config["responseMimeType"] = "application/json"
            if spec.get("schema") is not None:
                config["responseSchema"] = root_schema(
                    spec["schema"], "response_format.json_schema.schema"
                )
        else:
            raise _refuse("response_format.type")
    if config:
        out["generationConfig"] = config

    tools = body.get("tools")
    if tools:
        declarations = [_function(t, f"tools[{i}]") for i, t in enumerate(tools)]
        out["tools"] = [{"functionDeclarations": declarations}]
        choice = body.get("tool_choice")
        calling = _tool_config(choice, declarations)
        if body.get("parallel_tool_calls") is False and calling["mode"] != "NONE":
            raise _refuse("parallel_tool_calls", "Gemini cannot be told to call one tool at a time")
        if choice is not None:
            out["toolConfig"] = {"functionCallingConfig": calling}
    return out


# =========================================================================== responses


def gemini_usage(meta: Any) -> dict[str, Any] | None:
    """usageMetadata → OpenAI usage (thinking counts as completion, as OpenAI bills it)."""
    if not isinstance(meta, dict):
        return None
    prompt = int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0) + thoughts
    cached = int(meta.get("cachedContentTokenCount") or 0)
    out = chat_usage(prompt, completion, cached)
    if thoughts:
        out["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return out


def _tool_call(call: dict[str, Any], part: dict[str, Any], index: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": str(call.get("id") or f"call_{index}"),
        "type": "function",
        "function": {"name": call.get("name"), "arguments": _dumps(call.get("args") or {})},
    }
    if isinstance(part.get("thoughtSignature"), str):
        out["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return out


def _finish(reason: Any, calls: bool) -> str:
    mapped = _FINISH.get(str(reason), "stop")
    return "tool_calls" if calls and mapped == "stop" else mapped


def gemini_to_completion(body: dict[str, Any], model: str) -> dict[str, Any]:
    """A GenerateContentResponse as an OpenAI chat completion."""
    candidates = body.get("candidates") or []
    candidate = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("functionCall"), dict):
            calls.append(_tool_call(part["functionCall"], part, len(calls)))
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else texts).append(part["text"])
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if candidate:
        finish = _finish(candidate.get("finishReason"), bool(calls))
    else:
        # No candidate: the prompt itself was blocked (promptFeedback.blockReason).
        blocked = (body.get("promptFeedback") or {}).get("blockReason")
        finish = "content_filter" if blocked else "stop"
        message["content"] = ""
    usage = gemini_usage(body.get("usageMetadata"))
    return completion(f"chatcmpl-{body.get('responseId', '')}", model, message, finish, usage)


# =========================================================================== errors


def _google_error(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, list) and parsed:  # streamGenerateContent without alt=sse
        parsed = parsed[0]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, dict) and isinstance(error.get("message"), str) else None


def _openai_error(error: dict[str, Any] | None, status: int, body: bytes) -> dict[str, Any]:
    if error is None:
        text = body[:500].decode("utf-8", "replace").strip()
        message = f"The provider answered: {text}" if text else "The provider answered an error."
        return {"message": message, "type": "api_error", "param": None, "code": None}
    google = str(error.get("status") or "")
    reasons = {d.get("reason") for d in error.get("details") or [] if isinstance(d, dict)}
    kind = _ERROR_TYPES.get(google) or _STATUS_TYPES.get(status)
    kind = kind or ("api_error" if status >= 500 else "invalid_request_error")
    code: str | None = google.lower() or None
    if "API_KEY_INVALID" in reasons:  # Google answers 400 for a wrong key
        kind, code = "authentication_error", "invalid_api_key"
    return {"message": error["message"], "type": kind, "param": None, "code": code}


def error_to_chat(status: int, body: bytes) -> bytes:
    """Gemini's {"error": {code, message, status}} as OpenAI's envelope (status unchanged)."""
    return orjson.dumps({"error": _openai_error(_google_error(body), status, body)})


# =========================================================================== streams


class GeminiStreamToChat(ChatChunkWriter):
    """streamGenerateContent?alt=sse events → OpenAI chat.completion.chunk events.

    Each Gemini event is a partial GenerateContentResponse; the stream ends by closing, so
    the usage chunk and `[DONE]` come from `finish()`, and only after a finishReason.
    """

    def __init__(self, model: str, include_usage: bool, now: Callable[[], float] = time.time):
        super().__init__(model, include_usage, now)
        self._started = False
        self._calls = 0
        self._finish: str | None = None

    def _event(self, name: str | None, data: str) -> bytes:
        event = event_object(data)
        if event is None:
            return b""
        if isinstance(event.get("error"), dict):
            error = _openai_error(event["error"], int(event["error"].get("code") or 500), b"")
            return encode_event(orjson.dumps({"error": error}))
        out = bytearray()
        if not self._started:
            self._started = True
            self._id = f"chatcmpl-{event.get('responseId', '')}"
            out += self._chunk({"role": "assistant", "content": ""})
        if "usageMetadata" in event:
            self.usage = gemini_usage(event["usageMetadata"])
        candidates = event.get("candidates") or []
        candidate = next(
            (c for c in candidates if isinstance(c, dict) and c.get("index", 0) == 0), None
        )
        if candidate is None:
            if (event.get("promptFeedback") or {}).get("blockReason") and self._finish is None:
                self._finish = "content_filter"
                out += self._chunk({}, self._finish)
            return bytes(out)
        for part in (candidate.get("content") or {}).get("parts") or []:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("functionCall"), dict):
                # Gemini sends a call whole, in one part: one delta carries all of it.
                call = _tool_call(part["functionCall"], part, self._calls)
                out += self._chunk({"tool_calls": [{"index": self._calls, **call}]})
                self._calls += 1
            elif isinstance(part.get("text"), str) and part["text"]:
                key = "reasoning_content" if part.get("thought") else "content"
                out += self._chunk({key: part["text"]})
        if candidate.get("finishReason") and self._finish is None:
            self._finish = _finish(candidate["finishReason"], self._calls > 0)
            out += self._chunk({}, self._finish)
        return bytes(out)

    def finish(self) -> bytes:
        if self._finish is None or self.finished:
            return b""  # a stream cut before its finishReason must not look complete
        return self._end()


# =========================================================================== provider


#: GenerateContent ⇄ OpenAI chat.
CODEC = Codec(
    request_from_chat=lambda chat, model: chat_to_gemini(chat),  # the model is in the path
    response_to_chat=gemini_to_completion,
    stream_to_chat=GeminiStreamToChat,
    error_to_chat=error_to_chat,
)
