"""`/v1/session`: the web panel signs in with a key once and then holds a session cookie."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from research_service.auth.keys import KeyInfo
from research_service.errors import InvalidInput, Unauthorized
from research_service.events import dumps
from research_service.runs.models import iso_time
from research_service.web import validation
from research_service.web.access import AUTH, SESSION_COOKIE, Auth, session_cookies
from research_service.web.expect import expect_handler

#: The body field that carries the key to sign in with.
KEY_FIELD = "api_key"


def _json(data: dict[str, Any], *, status: int = 200) -> web.Response:
    return web.Response(status=status, body=dumps(data).encode(), content_type="application/json")


def _signed_in(key: KeyInfo, **extra: Any) -> dict[str, Any]:
    return {"auth": "keys", "name": key.name, "admin": key.admin, **extra}


def is_https(request: web.Request) -> bool:
    """Whether the browser's request came over https (here, or to a proxy that says so)."""
    if request.secure:
        return True
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return forwarded.split(",")[0].strip().lower() == "https"


async def _current(request: web.Request, auth: Auth) -> KeyInfo:
    header = request.headers.get("Authorization")
    if header is not None:
        return await auth.bearer(header)
    cookies = session_cookies(request)
    if not cookies:
        raise Unauthorized("not signed in; sign in with an API key (POST /v1/session)")
    info, _ = await auth.first_session(cookies)
    return info


async def get_session(request: web.Request) -> web.Response:
    """`GET /v1/session`: who this request is signed in as (or that auth is off)."""
    validation.known_params(request.query)
    auth = request.app.get(AUTH)
    if auth is None:
        return _json({"auth": "off"})
    return _json(_signed_in(await _current(request, auth)))


async def create_session(request: web.Request) -> web.Response:
    """`POST /v1/session` `{"api_key": ...}`: check the key, answer with a session cookie."""
    validation.known_params(request.query)
    body = await validation.json_object(request, required=False) or {}
    unknown = sorted(set(body) - {KEY_FIELD})
    if unknown:
        raise InvalidInput(
            f"unknown field(s) {', '.join(unknown)}; allowed: {KEY_FIELD}", field=unknown[0]
        )
    key = body.get(KEY_FIELD)
    # Checked with auth off too: a body is refused for what it is, whatever the mode.
    if KEY_FIELD in body and (not isinstance(key, str) or not key.strip()):
        raise InvalidInput(f"{KEY_FIELD} must be a non-empty string", field=KEY_FIELD)
    auth = request.app.get(AUTH)
    if auth is None:
        return _json({"auth": "off"})
    if key is None:
        header = request.headers.get("Authorization")
        if header is None:
            raise InvalidInput(f"send the API key as {KEY_FIELD}", field=KEY_FIELD)
        info = await auth.bearer(header)
    else:
        info = await auth.bearer(f"Bearer {key.strip()}")
    auth.sign_ins.take(info.id)
    ttl = auth.settings.session_ttl_s
    expires = int(time.time() + ttl)
    response = _json(_signed_in(info, expires_at=iso_time(expires)))
    response.set_cookie(
        SESSION_COOKIE,
        auth.signer.session(key_id=info.id, expires=expires),
        max_age=int(ttl),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=is_https(request),
    )
    return response


async def delete_session(request: web.Request) -> web.Response:
    """`DELETE /v1/session`: sign out: the session ends on the server and the cookie is cleared.

    Without a cookie, or with one that grants nothing, it is the same 204: the answer tells
    nothing about the cookie. Only a store that cannot record the sign-out fails it (503).
    """
    validation.known_params(request.query)
    auth = request.app.get(AUTH)
    cookies = session_cookies(request)
    if auth is not None and cookies:
        await auth.sign_out(cookies)
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/", samesite="Strict", httponly=True)
    return response


def setup_session(app: web.Application) -> None:
    """Register `/v1/session` (one resource, three methods)."""
    resource = app.router.add_resource("/v1/session", name="session")
    resource.add_route("GET", get_session, expect_handler=expect_handler)
    resource.add_route("POST", create_session, expect_handler=expect_handler)
    resource.add_route("DELETE", delete_session, expect_handler=expect_handler)
