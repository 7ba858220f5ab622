"""Canonical URLs: one spelling per page, so the same source found twice is kept once."""

from __future__ import annotations

import contextlib
import re
from typing import Final
from urllib.parse import SplitResult, unquote_plus, urlsplit, urlunsplit

DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# Query parameters that only say where a click came from, never which page it is.
TRACKING_PARAMS: Final = frozenset(
    {
        "_ga",
        "_gl",
        "_hsenc",
        "_hsmi",
        "dclid",
        "fbclid",
        "gbraid",
        "gclid",
        "gclsrc",
        "hsctatracking",
        "igshid",
        "mc_cid",
        "mc_eid",
        "mkt_tok",
        "msclkid",
        "oly_anon_id",
        "oly_enc_id",
        "ref",
        "ref_src",
        "ref_url",
        "s_cid",
        "twclid",
        "vero_conv",
        "vero_id",
        "wbraid",
        "yclid",
    }
)
TRACKING_PREFIXES: Final = ("utm_",)
# RFC 3986 unreserved characters: percent-encoding them changes nothing, so they are decoded.
UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Characters left as they are in a path or a query; anything else (spaces, non-ASCII) is
# percent-encoded as UTF-8, as a browser would before sending it.
PATH_SAFE: Final = UNRESERVED | frozenset("!$&'()*+,;=:@/")
QUERY_SAFE: Final = PATH_SAFE | frozenset("?")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def canonical_url(url: str) -> str:
    """The canonical spelling of `url`, for telling whether two URLs name the same page.

    Lowercases scheme and host, drops default ports, the fragment and tracking parameters,
    sorts the query, treats `/a/` like `/a` (keeping `/`), resolves `.` and `..` segments and
    normalises percent-encoding. A URL that cannot be parsed comes back stripped of spaces.
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
        netloc = _netloc(parts)
    except ValueError:  # a bad port or bracketed host: keep it, it is at least its own key
        return text
    scheme = parts.scheme.lower()
    path = _path(parts.path, has_host=bool(netloc))
    query = _query(parts.query)
    return urlunsplit((scheme, netloc, path, query, ""))


def _netloc(parts: SplitResult) -> str:
    """Userinfo, lowercased host (IDNA-encoded) and a port only when it is not the default."""
    host = parts.hostname or ""  # already lowercased by urlsplit
    if not host:
        return parts.netloc
    host = host.rstrip(".") or host
    if not host.isascii():
        # Not a valid IDN (e.g. an empty label): keep the lowercased text.
        with contextlib.suppress(UnicodeError):
            host = host.encode("idna").decode("ascii")
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    port = parts.port  # raises ValueError when it is not a number in range
    if port is not None and DEFAULT_PORTS.get(parts.scheme.lower()) != port:
        host = f"{host}:{port}"
    userinfo, at, _ = parts.netloc.rpartition("@")
    return f"{userinfo}{at}{host}"


def _path(path: str, *, has_host: bool) -> str:
    path = _remove_dot_segments(_normalise_escapes(path, safe=PATH_SAFE))
    if has_host and not path:
        return "/"
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    return path


def _query(query: str) -> str:
    """Tracking parameters dropped, the rest sorted by name (keeping repeated names in order)."""
    kept: list[tuple[str, str]] = []
    for field in query.split("&"):
        if not field:
            continue
        name = _normalise_escapes(field.partition("=")[0], safe=QUERY_SAFE)
        if is_tracking(name):
            continue
        kept.append((name, _normalise_escapes(field, safe=QUERY_SAFE)))
    kept.sort(key=lambda item: item[0])
    return "&".join(field for _, field in kept)


def is_tracking(name: str) -> bool:
    """Whether query parameter `name` only says where a click came from (`utm_source`)."""
    key = unquote_plus(name).lower()
    return key in TRACKING_PARAMS or key.startswith(TRACKING_PREFIXES)


def _normalise_escapes(text: str, *, safe: frozenset[str]) -> str:
    """Decode escaped unreserved characters, uppercase other escapes, encode unsafe ones."""
    if "%" not in text and safe.issuperset(text):  # most URLs: nothing to change
        return text
    out: list[str] = []
    index = 0
    while index < len(text):
        match = _ESCAPE.match(text, index)
        if match is not None:
            char = chr(int(match.group(1), 16))
            out.append(char if char in UNRESERVED else match.group(0).upper())
            index = match.end()
            continue
        char = text[index]
        if char in safe:
            out.append(char)
        else:  # includes a `%` that starts no escape: it must become %25
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
        index += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4: resolve `.` and `..` segments."""
    segments = path.split("/")
    if not any(segment in {".", ".."} for segment in segments):
        return path
    absolute = path.startswith("/")
    output: list[str] = []
    for segment in segments[1:] if absolute else segments:
        if segment == ".":
            continue
        if segment == "..":
            if output:
                output.pop()
            continue
        output.append(segment)
    # A path ending in a dot segment names a folder: keep its trailing slash.
    if segments[-1] in {".", ".."}:
        output.append("")
    resolved = "/".join(output)
    return "/" + resolved if absolute else resolved
