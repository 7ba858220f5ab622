"""Reading web pages: SSRF-guarded fetching, main-text extraction and passage selection."""

from research_service.reading.errors import (
    PageEmpty,
    PageError,
    PageHTTPError,
    PageNotText,
    PageRefused,
    PageTimeout,
    PageTooLarge,
    PageTooManyRedirects,
    PageUnreachable,
)
from research_service.reading.reader import PageReader, PageText, Reader, open_reader

__all__ = [
    "PageEmpty",
    "PageError",
    "PageHTTPError",
    "PageNotText",
    "PageReader",
    "PageRefused",
    "PageText",
    "PageTimeout",
    "PageTooLarge",
    "PageTooManyRedirects",
    "PageUnreachable",
    "Reader",
    "open_reader",
]
