"""Reading Envoy's x-forwarded-client-cert (XFCC) header, sans-IO.

The header is a comma-separated list of elements, one per proxy hop that terminated
mutual TLS; each element is `key=value` pairs separated by ';', values double-quoted
when they hold ',', ';' or '='. The sidecar in front of the agent *appends* its
element (Istio: APPEND_FORWARD / SANITIZE_SET), so only the last element is the peer
this hop verified; earlier ones came from further away, possibly from the caller.
"""

from __future__ import annotations

MAX_XFCC_CHARS = 16 * 1024


def _split(text: str, sep: str) -> list[str] | None:
    """Split on `sep` outside double quotes (backslash escapes inside them); None when a
    quote or an escape is left open (an element could then hide the ones after it)."""
    out, buf, quoted, escaped = [], [], False, False
    for ch in text:
        if escaped:
            buf.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if quoted or escaped:
        return None
    out.append("".join(buf))
    return out


def elements(header: str) -> list[list[tuple[str, str]]]:
    """The header's elements, each as its (key, value) pairs in order; none when the
    header is too long or malformed."""
    if len(header) > MAX_XFCC_CHARS:
        return []
    parts = _split(header, ",")
    if parts is None:
        return []
    out = []
    for element in parts:
        pairs = []
        for pair in _split(element, ";") or ():
            key, sep, value = pair.partition("=")
            if sep:
                pairs.append((key.strip().lower(), value.strip()))
        out.append(pairs)
    return out


def peer_spiffe_id(header: str) -> str | None:
    """The SPIFFE id of the peer the nearest proxy verified (its last element's first
    spiffe:// URI SAN), or None."""
    found = elements(header)
    if not found:
        return None
    for key, value in found[-1]:
        if key == "uri" and value.startswith("spiffe://"):
            return value
    return None
