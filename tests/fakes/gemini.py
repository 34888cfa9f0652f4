"""Fake Gemini API (native generateContent) for tests: real HTTP on 127.0.0.1, Google's wire format.

It is not an LLM. Answers are derived from the request so that tests can predict them:

* plain text: ``Echo: <text of the last user turn>``;
* a ``functionCall`` part (with a ``thoughtSignature``, as thinking models send) when tools are
  declared, the mode is not ``NONE`` and either the mode is ``ANY`` or the last user text names a
  declared function or says "weather"; its ``args`` fill the declared parameters' required
  properties (strings get the question, numbers 1, booleans true, enums their first value);
* ``functionResponse`` parts in the last user turn: ``The tool said: <response output>``;
* ``responseMimeType: application/json``: a JSON text (an instance of ``responseSchema`` if given);
* a question containing ``[blocked]``: no candidates, ``promptFeedback.blockReason: SAFETY``;
  ``[unsafe]``: one candidate with ``finishReason: SAFETY`` and no content.

``maxOutputTokens`` truncates by words (``MAX_TOKENS``); ``stopSequences`` cut before the
earliest match (``STOP``, as Gemini reports it); ``candidateCount`` repeats the candidate. Token
counts are whitespace word counts. Requests are validated the way Google validates them (400
``INVALID_ARGUMENT`` in Google's error shape): unknown fields, roles, empty parts, the ``data``
oneof, generationConfig types, Schema fields, function-response counts, and on ``gemini-3*``
models the thought signature of each function-call turn. Authentication follows the real API:
no key → 403 ``PERMISSION_DENIED``; a wrong key → 400 ``INVALID_ARGUMENT`` with reason
``API_KEY_INVALID`` (Google does not answer 401 for API keys).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from edge_agent.demo.runner import (
    Failure,
    FakeServer,
    RecordedRequest,
    ServerThread,
    read_body,
)

__all__ = ["STATUSES", "FakeGemini", "FakeGeminiThread", "RecordedRequest", "status_for"]

# google.rpc.Code names by HTTP status, as the Gemini API reports them.
STATUSES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_DEFAULT_MESSAGES: dict[int, str] = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "The service is currently unavailable.",
}
_NO_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
_BAD_KEY = "API key not valid. Please pass a valid API key."
_PATH_RE = re.compile(
    r"/v1beta/((?:models|tunedModels)/[^/:]+):(generateContent|streamGenerateContent)$"
)
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_BASE64_RE = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")
_TOOL_HINT_RE = re.compile(r"\bweather\b", re.IGNORECASE)
_WORD_RE = re.compile(r"\s*\S+")
_JSON = "application/json; charset=UTF-8"
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024

_REQUEST_FIELDS = frozenset(
    {
        "contents",
        "systemInstruction",
        "tools",
        "toolConfig",
        "safetySettings",
        "generationConfig",
        "cachedContent",
        "model",
    }
)
_PART_DATA = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
)
_PART_FIELDS = frozenset({*_PART_DATA, "thought", "thoughtSignature", "videoMetadata"})
_TOOL_FIELDS = frozenset(
    {"functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext"}
)
_DECLARATION_FIELDS = frozenset(
    {"name", "description", "parameters", "parametersJsonSchema", "response", "behavior"}
)
_SCHEMA_FIELDS = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "propertyOrdering",
        "default",
        "items",
        "minimum",
        "maximum",
    }
)
_SCHEMA_TYPES = frozenset({"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"})
# generationConfig field → (proto type name for errors, check).
_INT = ("TYPE_INT32", lambda v: isinstance(v, int) and not isinstance(v, bool))
_FLOAT = ("TYPE_FLOAT", lambda v: isinstance(v, int | float) and not isinstance(v, bool))
_BOOL = ("TYPE_BOOL", lambda v: isinstance(v, bool))
_STRING = ("TYPE_STRING", lambda v: isinstance(v, str))
_OBJECT = ("TYPE_MESSAGE", lambda v: isinstance(v, dict))
_LIST = ("TYPE_STRING", lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v))
_GENERATION_FIELDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "stopSequences": _LIST,
    "responseMimeType": _STRING,
    "responseSchema": _OBJECT,
    "responseJsonSchema": _OBJECT,
    "responseModalities": _LIST,
    "candidateCount": _INT,
    "maxOutputTokens": _INT,
    "temperature": _FLOAT,
    "topP": _FLOAT,
    "topK": _INT,
    "seed": _INT,
    "presencePenalty": _FLOAT,
    "frequencyPenalty": _FLOAT,
    "responseLogprobs": _BOOL,
    "logprobs": _INT,
    "enableEnhancedCivicAnswers": _BOOL,
    "thinkingConfig": _OBJECT,
    "speechConfig": _OBJECT,
    "mediaResolution": _STRING,
}
_MIME_TYPES = ("text/plain", "application/json", "text/x.enum")


def status_for(code: int) -> str:
    """Google's ``error.status`` for an HTTP status."""
    if code in STATUSES:
        return STATUSES[code]
    return "INTERNAL" if code >= 500 else "FAILED_PRECONDITION"


def _camel(name: str) -> str:
    # Google's JSON parser takes proto field names (snake_case) and JSON names alike.
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


class _BadRequest(Exception):
    """A 4xx answer raised from deep inside validation to keep the handler flat."""

    def __init__(self, message: str, status: int = 400, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason


def _unknown(name: str, where: str) -> _BadRequest:
    at = f" at '{where}'" if where else ""
    return _BadRequest(
        f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.'
    )


def _fields(obj: Any, allowed: frozenset[str], where: str) -> dict[str, Any]:
    """``obj`` with camelCase keys; an unknown key is Google's "Unknown name" error."""
    if not isinstance(obj, dict):
        raise _BadRequest(
            f"Invalid value at '{where}' (TYPE_MESSAGE), {orjson.dumps(obj).decode()}"
        )
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = _camel(key)
        if name not in allowed:
            raise _unknown(key, where)
        out[name] = value
    return out


# -- text helpers ----------------------------------------------------------------------------


def _count_words(text: str) -> int:
    return len(text.split())


def _split_words(text: str) -> list[str]:
    pieces = _WORD_RE.findall(text)
    rest = len(text) - sum(map(len, pieces))
    if rest:
        pieces.append(text[-rest:])
    return pieces


# -- validation ------------------------------------------------------------------------------


def _check_schema(schema: Any, where: str) -> dict[str, Any]:
    node = _fields(schema, _SCHEMA_FIELDS, where)
    kind = node.get("type")
    if kind is not None and (not isinstance(kind, str) or kind.upper() not in _SCHEMA_TYPES):
        raise _BadRequest(
            f"Invalid value at '{where}.type' (type.googleapis.com/google.ai.generativelanguage"
            f'.v1beta.Type), "{kind}"'
        )
    for key, value in (node.get("properties") or {}).items():
        _check_schema(value, f"{where}.properties[{key}].value")
    if "items" in node:
        _check_schema(node["items"], f"{where}.items")
    for i, sub in enumerate(node.get("anyOf") or []):
        _check_schema(sub, f"{where}.any_of[{i}]")
    if "enum" in node and not all(isinstance(v, str) for v in node["enum"]):
        raise _BadRequest(f"Invalid value at '{where}.enum' (TYPE_STRING)")
    return node


def _check_content(content: Any, where: str, *, system: bool = False) -> dict[str, Any]:
    node = _fields(content, frozenset({"role", "parts"}), where)
    role = node.get("role")
    if not system and role is not None and role not in ("user", "model"):
        raise _BadRequest("Please use a valid role: user, model.")
    parts = node.get("parts")
    if not isinstance(parts, list) or not parts:
        name = "system_instruction" if system else "contents"
        raise _BadRequest(
            f"* GenerateContentRequest.{where}.parts: {name}.parts must not be empty."
        )
    checked = []
    for j, part in enumerate(parts):
        at = f"{where}.parts[{j}]"
        fields = _fields(part, _PART_FIELDS, at)
        data = [k for k in _PART_DATA if k in fields]
        if not data:
            raise _BadRequest(
                f"* GenerateContentRequest.{at}.data: required oneof field 'data' must have one "
                "initialized field"
            )
        if len(data) > 1:
            raise _BadRequest(
                f"Invalid JSON payload received. Oneof field 'data' is already set. Cannot set "
                f"'{data[1]}'"
            )
        kind = data[0]
        value = fields[kind]
        if kind == "text" and not isinstance(value, str):
            raise _BadRequest(f"Invalid value at '{at}.text' (TYPE_STRING)")
        if kind == "inlineData":
            value = _fields(value, frozenset({"mimeType", "data"}), f"{at}.inline_data")
            if not isinstance(value.get("mimeType"), str) or not value["mimeType"]:
                raise _BadRequest(f"* GenerateContentRequest.{at}.inline_data.mime_type: required")
            try:
                base64.b64decode(str(value.get("data", "")), validate=True)
            except (binascii.Error, ValueError):
                raise _BadRequest(
                    f"Invalid value at '{at}.inline_data.data' (TYPE_BYTES), Base64 decoding failed"
                ) from None
        elif kind == "fileData":
            allowed = frozenset({"mimeType", "fileUri", "displayName"})
            value = _fields(value, allowed, f"{at}.file_data")
            if not isinstance(value.get("fileUri"), str) or not value["fileUri"]:
                raise _BadRequest(f"* GenerateContentRequest.{at}.file_data.file_uri: required")
        elif kind == "functionCall":
            value = _fields(value, frozenset({"id", "name", "args"}), f"{at}.function_call")
            if not isinstance(value.get("name"), str) or not value["name"]:
                raise _BadRequest(
                    f"* GenerateContentRequest.{at}.function_call.name: Name is empty."
                )
            if not isinstance(value.get("args", {}), dict):
                raise _BadRequest(f"Invalid value at '{at}.function_call.args' (TYPE_MESSAGE)")
        elif kind == "functionResponse":
            allowed = frozenset({"id", "name", "response", "parts", "willContinue", "scheduling"})
            value = _fields(value, allowed, f"{at}.function_response")
            if not isinstance(value.get("name"), str) or not value["name"]:
                raise _BadRequest(
                    f"* GenerateContentRequest.{at}.function_response.name: Name is empty."
                )
            if not isinstance(value.get("response"), dict):
                raise _BadRequest(
                    f"Invalid value at '{at}.function_response.response' (TYPE_MESSAGE)"
                )
        sig = fields.get("thoughtSignature")
        if sig is not None and (not isinstance(sig, str) or not _BASE64_RE.match(sig)):
            raise _BadRequest(
                f"Invalid value at '{at}.thought_signature' (TYPE_BYTES), Base64 decoding failed"
            )
        checked.append({**fields, kind: value})
    return {"role": role or "user", "parts": checked}


def _check_pairing(contents: list[dict[str, Any]], model: str) -> None:
    for i, content in enumerate(contents):
        calls = [p for p in content["parts"] if "functionCall" in p]
        if content["role"] != "model" or not calls:
            continue
        if model.startswith("gemini-3") and "thoughtSignature" not in calls[0]:
            raise _BadRequest(
                "Function call is missing a thought_signature in functionCall parts. This is "
                "required for tools to work correctly, and missing thought_signature may lead to "
                f"degraded model performance. Additional data, function call "
                f"`{calls[0]['functionCall']['name']}` , position {i + 1}. Please refer to "
                "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
            )
        if i + 1 < len(contents):
            following = contents[i + 1]["parts"]
            answers = [p for p in following if "functionResponse" in p]
            if answers and len(answers) != len(calls):
                raise _BadRequest(
                    "Please ensure that the number of function response parts is equal to the "
                    "number of function call parts of the function call turn."
                )


def _check_tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _BadRequest(
            "Invalid value at 'tools' "
            "(type.googleapis.com/google.ai.generativelanguage.v1beta.Tool)"
        )
    declarations: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        fields = _fields(tool, _TOOL_FIELDS, f"tools[{i}]")
        for j, decl in enumerate(fields.get("functionDeclarations") or []):
            at = f"tools[{i}].function_declarations[{j}]"
            d = _fields(decl, _DECLARATION_FIELDS, at)
            name = d.get("name")
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise _BadRequest(
                    f"* GenerateContentRequest.{at}.name: Invalid function name. Must start with a "
                    "letter or an underscore. Must be alphanumeric (a-z, A-Z, 0-9), underscores "
                    "(_), dots (.) or dashes (-), with a maximum length of 64."
                )
            if "parameters" in d:
                params = _check_schema(d["parameters"], f"{at}.parameters")
                if str(params.get("type", "")).upper() == "OBJECT" and not params.get("properties"):
                    raise _BadRequest(
                        f"* GenerateContentRequest.{at}.parameters.properties: should be non-empty "
                        "for OBJECT type"
                    )
                d["parameters"] = params
            declarations.append(d)
    return declarations


def _check_tool_config(config: Any, declarations: list[dict[str, Any]]) -> dict[str, Any]:
    if config is None:
        return {"mode": "AUTO"}
    fields = _fields(config, frozenset({"functionCallingConfig", "retrievalConfig"}), "tool_config")
    calling = _fields(
        fields.get("functionCallingConfig") or {},
        frozenset({"mode", "allowedFunctionNames"}),
        "tool_config.function_calling_config",
    )
    mode = calling.get("mode", "AUTO")
    if mode not in ("AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"):
        raise _BadRequest(
            "Invalid value at 'tool_config.function_calling_config.mode' (type.googleapis.com/"
            f'google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), "{mode}"'
        )
    allowed = calling.get("allowedFunctionNames")
    if allowed is not None:
        if mode not in ("ANY", "VALIDATED"):
            raise _BadRequest(
                "* GenerateContentRequest.tool_config.function_calling_config."
                "allowed_function_names: allowed_function_names can only be set when mode is "
                "ANY or VALIDATED."
            )
        names = {d["name"] for d in declarations}
        for name in allowed:
            if name not in names:
                raise _BadRequest(
                    "* GenerateContentRequest.tool_config.function_calling_config."
                    f"allowed_function_names: Function name {name} is not declared."
                )
    return {"mode": "AUTO" if mode == "MODE_UNSPECIFIED" else mode, "allowed": allowed}


def _check_generation(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    fields = _fields(config, frozenset(_GENERATION_FIELDS), "generation_config")
    for key, value in fields.items():
        type_name, ok = _GENERATION_FIELDS[key]
        if not ok(value):
            shown = orjson.dumps(value).decode()
            raise _BadRequest(
                f"Invalid value at 'generation_config.{_snake(key)}' ({type_name}), {shown}"
            )
    mime = fields.get("responseMimeType")
    if mime is not None and mime not in _MIME_TYPES:
        raise _BadRequest(
            f"* GenerateContentRequest.generation_config.response_mime_type: allowed mimetypes are "
            f"{', '.join(_MIME_TYPES)}."
        )
    if "responseSchema" in fields:
        if mime not in ("application/json", "text/x.enum"):
            raise _BadRequest(
                "* GenerateContentRequest.generation_config.response_schema: response_mime_type "
                "must be application/json or text/x.enum when response_schema is set."
            )
        fields["responseSchema"] = _check_schema(
            fields["responseSchema"], "generation_config.response_schema"
        )
    temperature = fields.get("temperature")
    if temperature is not None and not 0 <= temperature <= 2:
        raise _BadRequest(
            "* GenerateContentRequest.generation_config.temperature: temperature must be in [0, 2]"
        )
    count = fields.get("candidateCount")
    if count is not None and not 1 <= count <= 8:
        raise _BadRequest(
            "* GenerateContentRequest.generation_config.candidate_count: must be in [1, 8]"
        )
    if len(fields.get("stopSequences") or []) > 5:
        raise _BadRequest(
            "* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences"
        )
    return fields


@dataclass(slots=True)
class _Request:
    model: str
    contents: list[dict[str, Any]]
    system: dict[str, Any] | None
    declarations: list[dict[str, Any]]
    calling: dict[str, Any]
    generation: dict[str, Any]


def _parse(payload: dict[str, Any], model: str) -> _Request:
    fields = _fields(payload, _REQUEST_FIELDS, "")
    contents = fields.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _BadRequest("* GenerateContentRequest.contents: contents is not specified")
    checked = [_check_content(c, f"contents[{i}]") for i, c in enumerate(contents)]
    system = fields.get("systemInstruction")
    if system is not None:
        system = _check_content(system, "system_instruction", system=True)
    declarations = _check_tools(fields.get("tools"))
    calling = _check_tool_config(fields.get("toolConfig"), declarations)
    generation = _check_generation(fields.get("generationConfig"))
    _check_pairing(checked, model)
    return _Request(model, checked, system, declarations, calling, generation)


# -- answers ---------------------------------------------------------------------------------


def _placeholder(schema: Any, question: str) -> Any:
    if not isinstance(schema, dict):
        return question
    kind = str(schema.get("type", "string")).lower()
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _placeholder(v, question) for k, v in props.items()}
    if kind == "array":
        return [_placeholder(schema.get("items"), question)]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return question


def _arguments(schema: Any, question: str) -> dict[str, Any]:
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties") or {}
    return {
        name: (
            _arguments(props[name], question)
            if str(props[name].get("type", "")).lower() == "object"
            else _placeholder(props[name], question)
        )
        for name in schema.get("required") or []
        if name in props
    }


def _text_of(content: dict[str, Any] | None) -> str:
    if content is None:
        return ""
    return " ".join(p["text"] for p in content["parts"] if isinstance(p.get("text"), str))


def _prompt_tokens(request: _Request) -> int:
    total = _count_words(_text_of(request.system))
    for content in request.contents:
        for part in content["parts"]:
            if "text" in part:
                total += _count_words(part["text"])
            elif "functionCall" in part:
                total += _count_words(orjson.dumps(part["functionCall"].get("args", {})).decode())
            elif "functionResponse" in part:
                total += _count_words(orjson.dumps(part["functionResponse"]["response"]).decode())
            else:
                total += 258  # what Gemini counts for a small image
    return total


def _said(response: dict[str, Any]) -> str:
    value = response.get("output", response.get("content", response))
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _pick_function(request: _Request, question: str) -> dict[str, Any] | None:
    mode, allowed = request.calling["mode"], request.calling.get("allowed")
    candidates = [d for d in request.declarations if not allowed or d["name"] in allowed]
    if mode == "NONE" or not candidates:
        return None
    named = [d for d in candidates if d["name"].lower() in question.lower()]
    if named:
        return named[0]
    if mode in ("ANY", "VALIDATED") or _TOOL_HINT_RE.search(question):
        return candidates[0]
    return None


class FakeGemini(FakeServer):
    """The Gemini API's generateContent on aiohttp's low-level server (no router, no access log).

    Attributes tests may change at any time (also from another thread): ``delay_s`` (sleep before
    answering), ``stream_delay_s`` (sleep between SSE events), ``truncate_streams`` (end the next
    N streams after two events, without the finishReason), ``record``, ``models`` (if not None,
    other models get 404 ``NOT_FOUND``) and ``max_body_bytes``.

    ``url`` is the base URL without ``/v1beta`` (what a Gemini provider's ``base_url`` takes).
    :meth:`fail_next` answers with Google's error JSON (the ``status`` name for the code) unless
    given a body.
    """

    def __init__(
        self,
        *,
        name: str = "gemini",
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
        models: list[str] | None = None,
    ) -> None:
        super().__init__(name=name, host=host, port=port, record=record)
        self.api_key = api_key
        self.models = models
        # A small pause between events so that each one leaves in its own TCP segment.
        self.stream_delay_s: float = 0.001
        self.max_body_bytes = DEFAULT_MAX_BODY_BYTES
        self._tag = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()

    # -- plumbing --------------------------------------------------------------------------

    def _headers(self, content_type: str = _JSON) -> dict[str, str]:
        return {"Content-Type": content_type, "x-fake-upstream": self.name}

    def _json(self, payload: Any, status: int = 200) -> web.Response:
        return web.Response(status=status, body=orjson.dumps(payload), headers=self._headers())

    def _error(self, status: int, message: str, reason: str | None = None) -> web.Response:
        error: dict[str, Any] = {"code": status, "message": message, "status": status_for(status)}
        if reason is not None:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            ]
        return self._json({"error": error}, status)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body, too_large = await read_body(request, self.max_body_bytes)
        seq = next(self._seq)
        self._record(request, body)
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        match = _PATH_RE.search(request.path)
        if match is None:
            return self._error(404, f"Method not found: {request.path}")
        if request.method != "POST":
            return self._error(405, f"Method {request.method} is not allowed here.")
        if too_large:
            return self._error(400, "Request payload size exceeds the limit.")
        failure = self._take(self._failures)
        if failure is not None:
            return self._failure_response(failure)
        if self.api_key is not None:
            given = request.headers.get("x-goog-api-key") or request.query.get("key")
            if not given:
                return self._error(403, _NO_KEY)
            if given != self.api_key:
                return self._error(400, _BAD_KEY, "API_KEY_INVALID")
        name, method = match.group(1), match.group(2)
        model = name.split("/", 1)[1]
        if self.models is not None and model not in self.models:
            return self._error(
                404,
                f"{name} is not found for API version v1beta, or is not supported for "
                "generateContent. Call ListModels to see the list of available models and their "
                "supported methods.",
            )
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._error(400, "Invalid JSON payload received. Unexpected token.")
        try:
            parsed = _parse(payload, model)
        except _BadRequest as exc:
            return self._error(exc.status, exc.message, exc.reason)
        response = self._answer(parsed, seq)
        if method == "generateContent":
            return self._json(response)
        events = list(self._events(response))
        if request.query.get("alt") != "sse":
            return self._json(events)  # without alt=sse Google streams one JSON array
        return await self._sse(request, events)

    def _failure_response(self, failure: Failure) -> web.Response:
        status = failure.status
        if failure.body is None:
            message = _DEFAULT_MESSAGES.get(status, f"Request failed with status {status}")
            response = self._error(status, f"{message} (simulated failure in fake {self.name!r})")
        else:
            response = web.Response(status=status, body=failure.body, headers=self._headers())
        if failure.headers:
            response.headers.update(failure.headers)
        return response

    # -- answers ---------------------------------------------------------------------------

    def _answer(self, request: _Request, seq: int) -> dict[str, Any]:
        last = next((c for c in reversed(request.contents) if c["role"] == "user"), None)
        question = _text_of(last).strip()
        results = [
            p["functionResponse"]
            for p in (last or {"parts": []})["parts"]
            if "functionResponse" in p
        ]
        prompt = _prompt_tokens(request)
        base: dict[str, Any] = {
            "modelVersion": request.model,
            "responseId": f"{self._tag}{seq:010d}",
        }
        if "[blocked]" in question:
            return {
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt},
                **base,
            }
        config = request.generation
        parts: list[dict[str, Any]]
        finish, output = "STOP", 0
        function = None if results else _pick_function(request, question)
        if "[unsafe]" in question:
            parts, finish = [], "SAFETY"
        elif function is not None:
            args = _arguments(function.get("parameters"), question)
            signature = base64.b64encode(
                hashlib.blake2b(f"{seq}:{function['name']}".encode(), digest_size=24).digest()
            ).decode()
            parts = [
                {
                    "functionCall": {"name": function["name"], "args": args},
                    "thoughtSignature": signature,
                }
            ]
            output = max(1, len(orjson.dumps(args)) // 4)
        else:
            if results:
                text = "The tool said: " + " | ".join(_said(r["response"]) for r in results)
            elif config.get("responseMimeType") == "application/json":
                shape = config.get("responseSchema")
                value = _placeholder(shape, question) if shape else {"echo": question}
                text = orjson.dumps(value).decode()
            else:
                text = f"Echo: {question}".strip()
            cuts = [text.find(s) for s in config.get("stopSequences") or [] if s and s in text]
            if cuts:
                text = text[: min(cuts)]
            budget = config.get("maxOutputTokens")
            if budget is not None and _count_words(text) > budget:
                text = "".join(_split_words(text)[:budget])
                finish = "MAX_TOKENS"
            parts = [{"text": text}] if text else []
            output = _count_words(text)
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
        if not parts:
            candidate = {}
        candidate["finishReason"] = finish
        count = config.get("candidateCount", 1)
        return {
            "candidates": [{**candidate, "index": i} for i in range(count)],
            "usageMetadata": {
                "promptTokenCount": prompt,
                "candidatesTokenCount": output * count,
                "totalTokenCount": prompt + output * count,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
            },
            **base,
        }

    @staticmethod
    def _events(response: dict[str, Any]) -> list[dict[str, Any]]:
        """The answer as Gemini streams it: text in pieces; finishReason and usage at the end."""
        candidates = response.get("candidates")
        if not candidates:
            return [response]
        first = candidates[0]
        parts = (first.get("content") or {}).get("parts") or []
        text = "".join(p.get("text", "") for p in parts if "text" in p)
        if not text or len(candidates) > 1:
            return [response]
        words = _split_words(text)
        pieces = ["".join(words[i : i + 2]) for i in range(0, len(words), 2)]  # two words each
        meta = {k: v for k, v in response.items() if k not in ("candidates", "usageMetadata")}
        events = []
        for n, piece in enumerate(pieces):
            candidate: dict[str, Any] = {"content": {"parts": [{"text": piece}], "role": "model"}}
            event: dict[str, Any] = {"candidates": [candidate], **meta}
            if n == len(pieces) - 1:
                candidate["finishReason"] = first["finishReason"]
                event["usageMetadata"] = response["usageMetadata"]
            candidate["index"] = 0
            events.append(event)
        return events

    async def _sse(
        self, request: web.BaseRequest, events: list[dict[str, Any]]
    ) -> web.StreamResponse:
        headers = self._headers("text/event-stream")
        headers["Cache-Control"] = "no-cache"
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        cut = None
        if self.truncate_streams > 0:
            self.truncate_streams -= 1
            cut = 2
        try:
            # One write per event, with a pause between: each leaves on its own, as from a model.
            for number, event in enumerate(events):
                if cut is not None and number == cut:
                    break
                if number:
                    await asyncio.sleep(self.stream_delay_s)
                if cut is not None and number == len(events) - 1:
                    # Never send the closing event of a truncated stream.
                    event = {
                        **event,
                        "candidates": [{"content": event["candidates"][0]["content"]}],
                    }
                    event.pop("usageMetadata", None)
                await response.write(b"data: " + orjson.dumps(event) + b"\r\n\r\n")
            await response.write_eof()
        except ConnectionResetError:
            pass  # The client went away mid-stream; there is nobody left to tell.
        return response


class FakeGeminiThread(ServerThread[FakeGemini]):
    """Runs a :class:`FakeGemini` on its own event loop in a daemon thread (for sync tests).

    Keyword arguments go to :class:`FakeGemini`, except ``loop_factory``. ``start()`` / ``with``
    return the running fake.
    """

    fake_class = FakeGemini
    thread_prefix = "fake-gemini"
