"""OpenAI-shaped API errors.

Every refusal the agent sends to a client goes through `ApiError`, so clients (and the
official SDKs) see the same `{"error": {...}}` envelope whether the answer came from the
agent or from a provider.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

# What `unknown_endpoint` lists by default. Kept here (not derived from api.openai) so this
# module has no imports from the package; a unit test checks both agree.
SUPPORTED_ENDPOINTS: tuple[str, ...] = (
    "POST /v1/chat/completions",
    "POST /v1/completions",
    "POST /v1/embeddings",
    "POST /v1/messages",
    "GET /v1/models",
)

_MAX_LISTED_MODELS = 10
_MAX_ECHO = 200  # client-supplied strings echoed in messages are clipped to this


class ApiError(Exception):
    """An error answer: HTTP status plus OpenAI's error object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        # Extra response headers the error needs (e.g. `allow` on 405, `retry-after`).
        self.headers = headers

    def body(self) -> bytes:
        """The JSON response body, OpenAI's shape: {"error": {message, type, param, code}}."""
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        try:
            return orjson.dumps({"error": error})
        except orjson.JSONEncodeError:
            # Only reachable with lone surrogates (e.g. a path decoded with surrogateescape);
            # an error answer must still go out, so replace what JSON cannot carry.
            clean = {k: _utf8_safe(v) for k, v in error.items()}
            return orjson.dumps({"error": clean})

    def __repr__(self) -> str:
        return (
            f"ApiError(status={self.status}, type={self.type!r}, param={self.param!r}, "
            f"code={self.code!r}, message={self.message!r})"
        )


def _utf8_safe(value: str | None) -> str | None:
    if value is None:
        return None
    return value.encode("utf-8", "replace").decode("utf-8")


def clip(text: str, limit: int = _MAX_ECHO) -> str:
    """Shorten a client-supplied string before echoing it in an error message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """400: the request is malformed; `param` is the JSON path of the offending field."""
    return ApiError(400, message, param=param, code=code)


def model_not_found(model: str, available: Iterable[str]) -> ApiError:
    """404 for a model this gateway does not serve, listing what it does serve."""
    names = sorted(set(available))
    if not names:
        hint = "No models are configured on this gateway."
    else:
        shown = ", ".join(names[:_MAX_LISTED_MODELS])
        more = len(names) - _MAX_LISTED_MODELS
        suffix = f" and {more} more (GET /v1/models lists them all)" if more > 0 else ""
        hint = f"Available models: {shown}{suffix}."
    message = f"The model '{clip(model)}' does not exist or you do not have access to it. {hint}"
    return ApiError(404, message, param="model", code="model_not_found")


def unknown_endpoint(
    method: str, path: str, *, supported: Iterable[str] = SUPPORTED_ENDPOINTS
) -> ApiError:
    """404 for a URL the gateway does not route, listing the endpoints it does."""
    listed = ", ".join(supported)
    message = (
        f"Unknown request URL: {clip(method, 16)} {clip(path)}. Please check the URL for typos; "
        f"this gateway serves: {listed}."
    )
    return ApiError(404, message, code="unknown_url")


def method_not_allowed(method: str, path: str, allowed: str) -> ApiError:
    """405 for a known URL called with the wrong method; `allowed` is e.g. "POST"."""
    message = (
        f"Method {clip(method, 16)} is not allowed for {clip(path)}. Use {allowed} for this URL."
    )
    return ApiError(405, message, code="method_not_allowed", headers=(("allow", allowed),))


def payload_too_large(size: int | None, limit: int) -> ApiError:
    """413 for a body over the configured limit; `size` is None when it is not known."""
    if size is None:
        what = f"Request body exceeds the limit of {limit} bytes."
    else:
        what = f"Request body is {size} bytes, over the limit of {limit} bytes."
    message = f"{what} Send a smaller request (fewer or shorter messages or inputs)."
    return ApiError(413, message, code="request_too_large")


def service_unavailable(message: str, code: str) -> ApiError:
    """503: the gateway cannot serve the request now (no healthy provider, overload...)."""
    return ApiError(503, message, type="api_error", code=code)


# orjson reads 1024 nesting levels but writes only 254: a body between the two parses
# and cannot be re-encoded (cache key, translation). Refused rather than failed.
TOO_DEEP = invalid_request(
    "Request body nests JSON too deeply (more than 254 levels); flatten it.", code="too_deep"
)
