"""Why a web page could not be read; every message says what to do about it."""

from __future__ import annotations

from research_service.errors import ResearchError
from research_service.settings_fields import flag_name
from research_service.text import well_formed


def _flag(name: str) -> str:
    """The CLI flag for a settings field, for messages that point at it."""
    return f"--{flag_name(name)}"


class PageError(ResearchError):
    """A page could not be read; the run goes on without it."""

    code = "page_error"

    def __init__(self, message: str, *, url: str) -> None:
        # A reason phrase or Location with bytes that are not UTF-8 reaches us as surrogates.
        super().__init__(well_formed(message))
        self.url = url


class PageRefused(PageError):
    """The SSRF guard refused the URL: a scheme other than http(s), or a non-public host."""

    code = "page_refused"


class PageUnreachable(PageError):
    """The host could not be resolved or connected to, or the connection broke."""

    code = "page_unreachable"


class PageTimeout(PageError):
    """Reading the page (every redirect hop and the body) took longer than allowed."""

    code = "page_timeout"

    def __init__(self, *, url: str, timeout_s: float) -> None:
        super().__init__(
            f"{url} took longer than {timeout_s:g}s to read; "
            f"raise {_flag('fetch_timeout_s')} to wait longer",
            url=url,
        )
        self.timeout_s = timeout_s


class PageTooLarge(PageError):
    """The page is bigger than the size cap; it is refused, not truncated."""

    code = "page_too_large"

    def __init__(self, *, url: str, max_bytes: int) -> None:
        super().__init__(
            f"{url} is larger than {max_bytes} bytes; "
            f"raise {_flag('fetch_max_bytes')} to read pages this big",
            url=url,
        )
        self.max_bytes = max_bytes


class PageTooManyRedirects(PageError):
    """The page redirected more often than allowed."""

    code = "page_too_many_redirects"

    def __init__(self, *, url: str, max_redirects: int) -> None:
        super().__init__(
            f"{url} redirected more than {max_redirects} times; "
            f"raise {_flag('fetch_max_redirects')} to follow more",
            url=url,
        )
        self.max_redirects = max_redirects


class PageNotText(PageError):
    """The response is not an HTML or plain-text page (a PDF, an image, …)."""

    code = "page_not_text"

    def __init__(self, *, url: str, content_type: str, accepted: tuple[str, ...]) -> None:
        super().__init__(
            f"{url} is {content_type or 'of no declared type'}, not a readable page "
            f"({', '.join(accepted)}); it is skipped",
            url=url,
        )
        self.content_type = content_type


class PageHTTPError(PageError):
    """The server answered with an error status (or a redirect without a Location)."""

    code = "page_http_error"

    def __init__(self, *, url: str, status: int, reason: str) -> None:
        super().__init__(
            f"{url} answered HTTP {status} {reason}".rstrip()
            + "; check the address, or read another source",
            url=url,
        )
        self.status = status


class PageEmpty(PageError):
    """The page was read but no main text could be extracted from it."""

    code = "page_empty"

    def __init__(self, *, url: str) -> None:
        super().__init__(
            f"{url} has no main text to read (an empty page, or only navigation and scripts); "
            "it is skipped",
            url=url,
        )
