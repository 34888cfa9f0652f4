"""API error envelope and the canned errors."""

from __future__ import annotations

import orjson

from edge_agent.api.errors import (
    SUPPORTED_ENDPOINTS,
    ApiError,
    invalid_request,
    method_not_allowed,
    model_not_found,
    payload_too_large,
    service_unavailable,
    unknown_endpoint,
)
from edge_agent.api.openai import ENDPOINT_BY_PATH


def _error(err: ApiError) -> dict[str, object]:
    decoded = orjson.loads(err.body())
    assert set(decoded) == {"error"}
    assert set(decoded["error"]) == {"message", "type", "param", "code"}
    return decoded["error"]


def test_body_has_openai_shape_with_nulls() -> None:
    err = ApiError(400, "Bad thing.")
    assert _error(err) == {
        "message": "Bad thing.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert err.status == 400
    assert str(err) == "Bad thing."
    assert err.headers == ()


def test_body_carries_all_fields() -> None:
    err = ApiError(429, "Slow down.", type="rate_limit_error", param="x", code="rate_limited")
    assert _error(err) == {
        "message": "Slow down.",
        "type": "rate_limit_error",
        "param": "x",
        "code": "rate_limited",
    }


def test_body_survives_lone_surrogates() -> None:
    # A path decoded with surrogateescape must not make the error answer itself fail.
    err = unknown_endpoint("GET", "/v1/\udcff")
    assert "Unknown request URL: GET /v1/" in _error(err)["message"]


def test_invalid_request() -> None:
    err = invalid_request("Missing 'x'.", "x", "missing_required_parameter")
    assert (err.status, err.param, err.code, err.type) == (
        400,
        "x",
        "missing_required_parameter",
        "invalid_request_error",
    )


def test_model_not_found_lists_available_models() -> None:
    err = model_not_found("gpt-9", ["b-model", "a-model"])
    assert err.status == 404
    assert err.code == "model_not_found"
    assert err.param == "model"
    assert "'gpt-9'" in err.message
    assert "Available models: a-model, b-model." in err.message


def test_model_not_found_caps_the_list() -> None:
    names = [f"model-{i:02d}" for i in range(25)]
    err = model_not_found("nope", names)
    assert "model-09" in err.message
    assert "model-10" not in err.message
    assert "and 15 more" in err.message


def test_model_not_found_without_models_and_long_name() -> None:
    err = model_not_found("x" * 5000, [])
    assert "No models are configured" in err.message
    assert len(err.message) < 400  # client-supplied names are clipped


def test_unknown_endpoint_mimics_openai_and_lists_endpoints() -> None:
    err = unknown_endpoint("POST", "/v1/foo")
    assert err.status == 404
    assert err.type == "invalid_request_error"
    assert err.code == "unknown_url"
    assert err.message.startswith("Unknown request URL: POST /v1/foo. ")
    for path in ENDPOINT_BY_PATH:
        assert path in err.message


def test_supported_endpoints_match_the_router_table() -> None:
    assert {entry.split(" ", 1)[1] for entry in SUPPORTED_ENDPOINTS} == set(ENDPOINT_BY_PATH)


def test_unknown_endpoint_custom_list() -> None:
    err = unknown_endpoint("GET", "/x", supported=["POST /v1/messages"])
    assert "POST /v1/messages" in err.message
    assert "/v1/embeddings" not in err.message


def test_method_not_allowed() -> None:
    err = method_not_allowed("GET", "/v1/chat/completions", "POST")
    assert err.status == 405
    assert "GET" in err.message and "/v1/chat/completions" in err.message
    assert "Use POST" in err.message
    assert err.headers == (("allow", "POST"),)


def test_payload_too_large() -> None:
    err = payload_too_large(2_000_000, 1_048_576)
    assert (err.status, err.code) == (413, "request_too_large")
    assert "2000000" in err.message and "1048576" in err.message
    unknown = payload_too_large(None, 1024)
    assert "1024" in unknown.message and unknown.status == 413


def test_service_unavailable() -> None:
    err = service_unavailable("No healthy provider for 'gpt-4o'.", "no_healthy_upstream")
    assert (err.status, err.type, err.code) == (503, "api_error", "no_healthy_upstream")
    assert _error(err)["message"] == "No healthy provider for 'gpt-4o'."


def test_repr_is_informative() -> None:
    text = repr(invalid_request("Bad.", "temperature"))
    assert "400" in text and "temperature" in text
