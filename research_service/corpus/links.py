"""Where a folder corpus's results link to: its `file://` URLs, or the same paths on a site."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from research_service.errors import ConfigError


@dataclass(frozen=True, slots=True)
class LinkBase:
    """Results whose URL starts with `prefix` (a folder's `file://` URL) link under `base`."""

    prefix: str
    base: str

    def rebase(self, url: str) -> str:
        """`url` moved from the folder onto the base URL; other URLs are left alone."""
        if url.startswith(self.prefix):
            # Both are URLs: the path after the prefix is already percent-encoded.
            return self.base + url[len(self.prefix) :]
        return url


def folder_prefix(folder: Path) -> str:
    """The `file://` URL every document under `folder` starts with, ending in `/`."""
    return folder.expanduser().resolve().as_uri().rstrip("/") + "/"


def base_url(raw: str) -> str:
    """A checked base URL: absolute http(s), no query or fragment, ending in `/`."""
    parts = urlsplit(raw.strip())
    shown = "the URL" if "@" in raw else repr(raw)  # it may hold a password: not quoted back
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"{shown} is not an absolute http(s) URL; pass one such as https://docs.example.org/"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"{shown} has a query or fragment; pass the site's folder URL alone")
    url = parts.geturl()
    return url if url.endswith("/") else url + "/"
