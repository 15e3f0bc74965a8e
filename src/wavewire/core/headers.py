"""Checks of header pairs an application or a caller wants sent (no CR/LF injection, no framing
headers the core sets itself). Shared by the configuration, the admission decision and the
handshake, so that none of them imports another for it."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["NO_BODY_STATUSES", "check_headers", "check_response_headers"]

#: RFC 9110 5.6.2 token characters: what a header name may be made of.
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _check_header_value(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"header {name!r} must be a str, got {type(value).__name__}")
    # A CR or LF would let a caller inject headers or split the request (websockets 16.1).
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"header {name!r} has a CR, LF or NUL in its value; refusing to send it")
    # h11 sends ASCII only; other control characters are invalid field values (RFC 9110 5.5).
    if any(not (" " <= c <= "~" or c == "\t") for c in value):
        raise ValueError(f"header {name!r} must be printable ASCII (percent-encode other text)")


def _check_header_name(name: object) -> None:
    if not isinstance(name, str):
        raise TypeError(f"header name must be a str, got {type(name).__name__}")
    if not name or not _TOKEN_CHARS.issuperset(name):
        raise ValueError(f"invalid header name {name!r}")


def check_headers(headers: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Validate header pairs the caller wants sent; return them as a tuple."""
    checked = tuple((name, value) for name, value in headers)
    for name, value in checked:
        _check_header_name(name)
        _check_header_value(name, value)
    return checked


#: Statuses whose responses never have a body nor, here, a Content-Length (RFC 9110 8.6, 15.4.5).
NO_BODY_STATUSES = frozenset((204, 304))
#: The core frames every response body itself; a caller's framing headers would contradict it.
_FRAMING_HEADERS = frozenset(("content-length", "transfer-encoding"))


def check_response_headers(headers: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """``check_headers``, refusing the framing headers the core sets from the body."""
    checked = check_headers(headers)
    for name, _value in checked:
        if name.lower() in _FRAMING_HEADERS:
            raise ValueError(f"header {name!r} is set by wavewire from the body; do not pass it")
    return checked
