"""Who is asking: the API key, session or stream token behind a `/v1` request, and what it sees."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from research_service.auth.keyring import Keyring
from research_service.auth.keys import KeyInfo
from research_service.auth.sign_ins import SignInLimit
from research_service.auth.sign_outs import SignOuts
from research_service.auth.tokens import BadSignature, Expired, SessionGrant, Signer
from research_service.errors import Forbidden, Unauthorized
from research_service.runs.models import RunRecord
from research_service.settings import Settings

#: The panel's session cookie.
SESSION_COOKIE: Final = "research_session"
#: The most session cookies of one request that are tried (a browser may send two: one for
#: a proxy's prefix and an older one for `/`).
MAX_SESSION_COOKIES: Final = 4
#: The query parameter that carries a run's stream token.
TOKEN_PARAM: Final = "token"
#: The only routes a stream token opens: a run's snapshot and its event stream.
TOKEN_ROUTES: Final = frozenset({"run", "run-events"})
#: Routes that authenticate for themselves (signing in and out).
SELF_AUTHENTICATING: Final = frozenset({"session"})
#: The requests that last (streams, a large recording's download): cut when their key is
#: revoked or their session signed out. Others were allowed when they began and end within
#: moments: one cut after its run was stored left the run made and its creator unanswered.
CUT_WHEN_REVOKED: Final = frozenset({"run-events", "research", "run-recording"})
#: What a session cookie that grants nothing gets, whatever the reason (forged, expired, ended).
SESSION_ENDED: Final = "the session has ended; sign in again"


@dataclass(frozen=True, slots=True)
class Access:
    """What one request may see and do."""

    #: The key name runs are created for and listed by (None with auth off).
    owner: str | None
    admin: bool
    key_id: str | None = None
    #: A stream token's run: the request may read this run only.
    run_id: str | None = None
    #: How the request authenticated: open (auth off), key, session or token.
    via: str = "open"
    #: The session a request made with a session cookie belongs to (cut when it is signed out).
    session_id: str | None = None

    @classmethod
    def of_key(
        cls, key: KeyInfo, *, via: str, run_id: str | None = None, session_id: str | None = None
    ) -> Access:
        """The access a usable key gives."""
        return cls(key.name, key.admin, key.id, run_id, via, session_id)

    def sees(self, record: RunRecord) -> bool:
        """Whether this request may see run `record` (else it is "not found")."""
        if self.run_id is not None and record.id != self.run_id:
            return False
        return self.admin or (self.owner is not None and record.owner == self.owner)

    @property
    def listed_owner(self) -> str | None:
        """Whose runs a listing shows: everyone's for an admin, else the key's own."""
        return None if self.admin else self.owner


#: Everyone, when auth is off: every run, created without an owner.
OPEN: Final = Access(owner=None, admin=True)
ACCESS = web.RequestKey("access", Access)


@dataclass(frozen=True, slots=True)
class Auth:
    """What checking credentials needs (present in the app only with --auth keys)."""

    keyring: Keyring
    signer: Signer
    settings: Settings
    sign_outs: SignOuts
    sign_ins: SignInLimit = field(default_factory=SignInLimit)

    def stream_token(self, access: Access, run_id: str) -> str | None:
        """A stream token for `run_id` as `access`'s key; None without a key, or to a session.

        A session's browser sends its cookie to the stream as to everything else, and a token
        would outlive the session's sign-out (it names the key, not the session).
        """
        if access.key_id is None or access.session_id is not None:
            return None
        expires = int(time.time() + self.settings.stream_token_ttl_s)
        return self.signer.stream_token(run_id=run_id, key_id=access.key_id, expires=expires)

    async def bearer(self, header: str) -> KeyInfo:
        """The key an `Authorization` header carries; Unauthorized unless usable."""
        scheme, _, key = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized(
                "the Authorization header must be `Bearer <API key>`", error="invalid_request"
            )
        info = await self.keyring.authenticate(key.strip())
        if info is None:
            raise Unauthorized(
                "the API key is unknown or revoked; ask the operator for a key "
                "(research-service keys create NAME)",
                error="invalid_token",
            )
        return info

    async def session(self, value: str) -> tuple[KeyInfo, SessionGrant]:
        """The key a session cookie stands for, and its grant; Unauthorized when it has ended.

        Ended: expired, signed out (on any node), or not signed by us at all (a cookie of
        the releases before session ids among them).
        """
        try:
            grant = self.signer.check_session(value, now=time.time())
        except (BadSignature, Expired):
            raise Unauthorized(SESSION_ENDED) from None
        if await self.sign_outs.has_ended(grant):
            raise Unauthorized(SESSION_ENDED)
        info = await self.keyring.usable(grant.key_id)
        if info is None:
            raise Unauthorized("the session's API key was revoked; sign in with another key")
        return info, grant

    async def first_session(self, values: list[str]) -> tuple[KeyInfo, SessionGrant]:
        """The first of cookies `values` (never empty) that grants; else why the first does not."""
        refused: Unauthorized | None = None
        for value in values:
            try:
                return await self.session(value)
            except Unauthorized as exc:
                refused = refused or exc
        assert refused is not None
        raise refused

    async def sign_out(self, values: list[str]) -> None:
        """End the sessions of cookies `values` for good; nothing for a value that grants nothing.

        Their key need not be usable any more: ending a session is never refused.
        """
        for value in values:
            try:
                grant = self.signer.check_session(value, now=time.time())
            except (BadSignature, Expired):
                continue
            await self.sign_outs.end(grant)

    async def token(self, value: str, *, run_id: str) -> KeyInfo:
        """The key a stream token was made for; Unauthorized unless it opens run `run_id`."""
        try:
            grant = self.signer.check_stream_token(value, now=time.time())
        except Expired:
            raise Unauthorized(
                "the stream token has expired; get a fresh events_url (POST /v1/runs or "
                "GET /v1/runs/{id}) with your API key",
                error="invalid_token",
            ) from None
        except BadSignature:
            raise Unauthorized("the stream token is not valid", error="invalid_token") from None
        if grant.run_id != run_id:
            raise Unauthorized("the stream token is for another run", error="invalid_token")
        info = await self.keyring.usable(grant.key_id)
        if info is None:
            raise Unauthorized("the stream token's API key was revoked", error="invalid_token")
        return info

    async def access(self, request: web.Request) -> Access:
        """Who `request` is: its Authorization header, else its stream token, else its session."""
        refuse_misplaced_token(request)
        token = request.query.get(TOKEN_PARAM)
        header = request.headers.get("Authorization")
        if header is not None:
            return Access.of_key(await self.bearer(header), via="key")
        if token is not None:
            run_id = request.match_info.get("run_id", "")
            info = await self.token(token, run_id=run_id)
            return Access.of_key(info, via="token", run_id=run_id)
        if cookies := session_cookies(request):
            info, grant = await self.first_session(cookies)
            return Access.of_key(info, via="session", session_id=grant.session_id)
        raise Unauthorized(
            "this service needs an API key: send Authorization: Bearer <API key>, or sign in "
            "on the web panel"
        )


AUTH = web.AppKey("auth", Auth)


def refuse_misplaced_token(request: web.Request) -> None:
    """Forbidden (403) for a stream token on any route but a run's snapshot and stream."""
    if TOKEN_PARAM in request.query and request.match_info.route.name not in TOKEN_ROUTES:
        raise Forbidden(
            "a stream token opens one run's events and snapshot only; send "
            "Authorization: Bearer <API key> for anything else",
            slug="token-not-allowed",
            title="Stream token not allowed here",
        )


def session_cookies(request: web.Request) -> list[str]:
    """Every session cookie the request sends, in its order (at most MAX_SESSION_COOKIES).

    Not `request.cookies`, which keeps the last of two cookies of one name. A browser sends
    the one of the longest path first: behind a proxy's prefix, that one, and then one an
    older release left at `/`, which would otherwise end every request's session.
    """
    found: list[str] = []
    for header in request.headers.getall("Cookie", ()):
        for pair in header.split(";"):
            name, _, value = pair.strip().partition("=")
            value = value.strip().strip('"')
            if name.strip() == SESSION_COOKIE and value:
                found.append(value)
                if len(found) == MAX_SESSION_COOKIES:
                    return found
    return found


def _needs_access(request: web.Request) -> bool:
    """Whether the route is one of the `/v1` API's (the panel and health checks are open)."""
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical.startswith("/v1/")


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Set the request's Access; with auth on, refuse it (401) without usable credentials.

    A stream (CUT_WHEN_REVOKED) made with a key is cut when that key is revoked while it
    lasts, and one made with a session cookie when that session is signed out.
    """
    if not _needs_access(request):
        return await handler(request)
    auth = request.app.get(AUTH)
    if auth is None:
        request[ACCESS] = OPEN
        return await handler(request)
    if request.match_info.route.name in SELF_AUTHENTICATING:
        refuse_misplaced_token(request)  # signing in with one is no exception
        return await handler(request)
    access = await auth.access(request)
    request[ACCESS] = access
    assert access.key_id is not None
    if request.match_info.route.name not in CUT_WHEN_REVOKED:
        return await handler(request)
    cut = functools.partial(_cut, request)
    unwatch = auth.keyring.watch(access.key_id, cut)
    unwatch_session = None
    if access.session_id is not None:
        unwatch_session = auth.sign_outs.watch(access.session_id, cut)
    try:
        return await handler(request)
    finally:
        unwatch()
        if unwatch_session is not None:
            unwatch_session()


def _cut(request: web.Request) -> None:
    """Close the connection of a request whose key or session ended (its handler is cancelled)."""
    transport = request.transport
    if transport is not None:
        transport.abort()
