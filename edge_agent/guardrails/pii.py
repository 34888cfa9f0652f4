"""Personal data in text, sans-IO: find it, and replace it with its type.

Candidates come from cheap scans (a substring test first where one exists), then a
check rules out look-alikes: Luhn for card numbers and IBAN's mod-97 (python-stdnum),
the SSA's rules for US SSNs (python-stdnum), Google's libphonenumber metadata for phone
numbers (phonenumbers, on candidates only: its own matcher scans ~5 ms per KB),
`ipaddress` for IP addresses. Overlapping findings keep the type that comes first in
ENTITY_ORDER.

Findings carry types and positions; callers report types and counts, never values.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import phonenumbers
from stdnum import iban, luhn
from stdnum.us import ssn

#: Detected here; PERSON needs a named-entity model, which does not install from PyPI.
ENTITY_ORDER = (
    "API_KEY",
    "EMAIL_ADDRESS",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "IP_ADDRESS",
    "PHONE_NUMBER",
)
NEEDS_NER = ("PERSON",)


@dataclass(frozen=True, slots=True)
class Finding:
    entity: str
    start: int
    end: int


_EMAIL = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# Provider and cloud credentials by their documented prefixes.
_KEY_PREFIXES = ("sk-", "AKIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xox", "AIza")
_API_KEY = re.compile(
    r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"
    r"|AKIA[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35})"
)
# Every run of digits with the separators numbers are written with: card numbers, SSNs,
# IPv4 addresses and phone numbers are each one such run. One scan finds them all; each
# run is then checked for what it may be (Python's `re` costs ~10 µs per KB and pattern,
# whatever the pattern: one digit scan instead of four).
_DIGIT = re.compile(r"\d")
_RUN = re.compile(r"\+?\(?\d(?:[\d.() /+-]*\d)?")
_SSN = re.compile(r"\d{3}-\d{2}-\d{4}")
_IPV4 = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}")
_CARD_CHARS = frozenset("0123456789 -")
# Issuer prefixes of the card networks (Visa, Mastercard, Amex, Diners, Discover, JCB,
# UnionPay, Maestro): a long number that merely passes Luhn (one in ten do) is not a card.
_CARD_PREFIX = re.compile(r"4|5[0-8]|2[2-7]|3[0-9]|6[0-9]")


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class Detector:
    """Finds the configured entity types in text."""

    def __init__(self, entities: Iterable[str], phone_region: str = "US") -> None:
        wanted = set(entities)
        unknown = wanted - set(ENTITY_ORDER)
        if unknown:
            raise ValueError(f"unknown entity types: {', '.join(sorted(unknown))}")
        self.wanted = frozenset(wanted)
        self.region = phone_region
        self._numbers = bool(
            wanted & {"CREDIT_CARD", "US_SSN", "IP_ADDRESS", "PHONE_NUMBER", "IBAN_CODE"}
        )

    def find(self, text: str) -> list[Finding]:
        wanted = self.wanted
        found: list[Finding] = []
        if "API_KEY" in wanted and any(p in text for p in _KEY_PREFIXES):
            found += (Finding("API_KEY", *m.span()) for m in _API_KEY.finditer(text))
        if "EMAIL_ADDRESS" in wanted and "@" in text:
            found += (Finding("EMAIL_ADDRESS", *m.span()) for m in _EMAIL.finditer(text))
        if self._numbers and _DIGIT.search(text):
            if "IBAN_CODE" in wanted:
                for m in _IBAN.finditer(text):
                    if iban.is_valid(m.group().replace(" ", "")):
                        found.append(Finding("IBAN_CODE", *m.span()))
            for m in _RUN.finditer(text):
                entity = self._number(m.group())
                if entity is not None:
                    found.append(Finding(entity, *m.span()))
        if "IP_ADDRESS" in wanted and text.count(":") >= 2:
            for m in _IPV6.finditer(text):
                if ":" in m.group() and _is_ip(m.group()):
                    found.append(Finding("IP_ADDRESS", *m.span()))
        return _without_overlaps(found)

    def _number(self, run: str) -> str | None:
        """What a run of digits is, if it is one of the wanted entities."""
        wanted = self.wanted
        if "IP_ADDRESS" in wanted and _IPV4.fullmatch(run):
            return "IP_ADDRESS" if _is_ip(run) else None
        digits = _digits(run)
        if len(digits) < 7:
            return None
        if (
            "CREDIT_CARD" in wanted
            and 13 <= len(digits) <= 19
            and _CARD_CHARS.issuperset(run)
            and _CARD_PREFIX.match(digits)
            and luhn.is_valid(digits)
        ):
            return "CREDIT_CARD"
        if "US_SSN" in wanted and _SSN.fullmatch(run) and ssn.is_valid(run):
            return "US_SSN"
        if "PHONE_NUMBER" in wanted and len(digits) <= 15:
            try:
                number = phonenumbers.parse(run, self.region)
            except phonenumbers.NumberParseException:
                return None
            if phonenumbers.is_valid_number(number):
                return "PHONE_NUMBER"
        return None


def _without_overlaps(found: list[Finding]) -> list[Finding]:
    """In text order; of overlapping findings, the one of the earlier type in
    ENTITY_ORDER (a key or an address wins over the digits inside it)."""
    rank = {e: i for i, e in enumerate(ENTITY_ORDER)}
    kept: list[Finding] = []
    for f in sorted(found, key=lambda f: rank[f.entity]):
        if not any(f.start < k.end and k.start < f.end for k in kept):
            kept.append(f)
    kept.sort(key=lambda f: f.start)
    return kept


def redact(text: str, findings: Sequence[Finding]) -> str:
    """`text` with each finding replaced by its type, e.g. `<EMAIL_ADDRESS>`."""
    out: list[str] = []
    at = 0
    for f in findings:
        out.append(text[at : f.start])
        out.append(f"<{f.entity}>")
        at = f.end
    out.append(text[at:])
    return "".join(out)
