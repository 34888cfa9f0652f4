"""The config for guardrails (docs/compliance.md). What is not built yet is refused with
a message that says so, never silently ignored."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.guardrails.pii import ENTITY_ORDER, NEEDS_NER

Entity = Literal[
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "IP_ADDRESS",
    "API_KEY",
    "PERSON",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _not_yet(what: str) -> str:
    return f"{what} is not implemented in this version yet (issue 17); remove it"


class PiiConfig(_Strict):
    # off: not looked for. redact: each finding becomes its type (<EMAIL_ADDRESS>) before
    # the request goes anywhere (cache keys included). block: the request is refused
    # with 400 naming the types found.
    action: Literal["off", "redact", "pseudonymize", "block"] = "off"
    entities: list[Entity] = Field(default_factory=lambda: list(ENTITY_ORDER))
    direction: Literal["request", "response", "both"] = "request"
    # Phone numbers written without a country code are read as this region's (ISO 3166).
    phone_region: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = "US"

    @field_validator("entities")
    @classmethod
    def _detectable(cls, v: list[str]) -> list[str]:
        ner = [e for e in v if e in NEEDS_NER]
        if ner:
            raise ValueError(
                f"{', '.join(ner)} needs a named-entity model, and none that installs from "
                "PyPI without a model hub is bundled; remove it from entities"
            )
        if not v:
            raise ValueError("give at least one entity type, or set action: off")
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _built(self) -> PiiConfig:
        if self.action == "pseudonymize":
            raise ValueError(_not_yet("action: pseudonymize"))
        if self.action != "off" and self.direction != "request":
            raise ValueError(
                _not_yet(f"direction: {self.direction} (answers are not scanned yet)")
                + "; set direction: request"
            )
        return self


class DenyRule(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]
    regex: str

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return v


class ExternalChecker(_Strict):
    """An operator's own checker: POST {"text", "direction", "tenant"} for every text of
    a request, answered {"action": "allow" | "block" | "redact", "text"?, "reason"?}."""

    url: str
    timeout_ms: Annotated[int, Field(ge=10, le=10_000)] = 200
    # open: the request goes on unchecked when the checker fails or is late;
    # closed: it is refused with 503.
    on_error: Literal["open", "closed"] = "closed"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL, got {v!r}")
        return v


class GuardrailsConfig(_Strict):
    pii: PiiConfig = Field(default_factory=PiiConfig)
    # Prompts matching any of these are refused with 400 naming the rule.
    deny: list[DenyRule] = Field(default_factory=list)
    external: ExternalChecker | None = None

    @field_validator("deny")
    @classmethod
    def _unique(cls, v: list[DenyRule]) -> list[DenyRule]:
        names = [r.name for r in v]
        if len(names) != len(set(names)):
            raise ValueError("deny rule names must be unique")
        return v

    @property
    def active(self) -> bool:
        return self.pii.action != "off" or bool(self.deny) or self.external is not None
