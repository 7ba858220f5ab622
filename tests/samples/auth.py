"""docs/api.md's Authentication exchanges: keys, stream tokens, sessions, Host and origin rules."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final

from tests.samples.api import http
from tests.samples.format import Ids
from tests.samples.service import Env, Service, serving

#: The keys the samples' service takes from its keys file: name -> (secret, admin).
KEYS: Final = {
    "alice": ("alice-0123456789abcdefghijklmnopqrstuv", False),
    "bob": ("bob-0123456789abcdefghijklmnopqrstuvwxy", False),
    "ops": ("ops-0123456789abcdefghijklmnopqrstuvwxy", True),
}
KEYS_FILE: Final = "samples-keys.txt"
#: Signs the samples' tokens and cookies (a fixed one: nothing is written to the data folder).
SECRET: Final = "samples-only-signing-secret-0123456789"
#: The origin whose pages may call the API in these samples (--cors-origins).
APP_ORIGIN: Final = "https://app.example.com"
#: A page elsewhere, and a name that resolves to the service only by DNS rebinding.
OTHER_ORIGIN: Final = "https://elsewhere.example"
REBOUND_HOST: Final = "rebind.attacker.example"
QUESTION: Final = {"question": "How do I parse JSON?"}


def keys_file(env: Env) -> Path:
    """The samples' keys file, written into the data folder."""
    path = env.data_dir / KEYS_FILE
    lines = [f"{name}:{key}{':admin' if admin else ''}\n" for name, (key, admin) in KEYS.items()]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def bearer(name: str) -> dict[str, str]:
    """The Authorization header of key `name`."""
    return {"Authorization": f"Bearer {KEYS[name][0]}"}


async def _keys_and_tokens(service: Service, ids: Ids) -> dict[str, str]:
    """No key (401), a run made with a key, another key asking for it, a token elsewhere."""
    missing = await service.request("GET", "/v1/runs")
    created = await service.request("POST", "/v1/runs", json=QUESTION, headers=bearer("alice"))
    run, events_url = created.json()["id"], created.json()["events_url"]
    ids.stable(run)
    not_yours = await service.request("GET", f"/v1/runs/{run}", headers=bearer("bob"))
    token = events_url.split("?token=", 1)[1]
    token_elsewhere = await service.request("GET", f"/v1/runs?token={token}")
    return {
        "api/auth-missing": http(missing, "Content-Type", "WWW-Authenticate"),
        "api/auth-create": http(created, "Content-Type", "Location"),
        "api/auth-not-yours": http(not_yours, "Content-Type"),
        "api/auth-token-elsewhere": http(token_elsewhere, "Content-Type"),
    }


async def _session(service: Service, ids: Ids) -> dict[str, str]:
    """The panel signs in with a key (a cookie comes back) and signs out with it."""
    signed_in = await service.request("POST", "/v1/session", json={"api_key": KEYS["alice"][0]})
    cookie = signed_in.headers["Set-Cookie"].split(";", 1)[0]
    # `<key id>.<session id>.<expires>.<signature>`: the session id is random.
    session_id = cookie.split(".")[1]
    ids.fix(session_id, hashlib.sha256(f"{ids.seed}:session".encode()).hexdigest()[:32])
    signed_out = await service.request("DELETE", "/v1/session", headers={"Cookie": cookie})
    return {
        "api/session-create": http(signed_in, "Content-Type", "Set-Cookie", whole=("Set-Cookie",)),
        "api/session-delete": http(signed_out, "Set-Cookie", whole=("Set-Cookie",)),
    }


async def _origins(service: Service) -> dict[str, str]:
    """A rebound Host (421), a write from another site (403), a listed origin's preflight."""
    rebound = await service.request("GET", "/v1/runs", headers={"Host": REBOUND_HOST})
    cross_site = await service.request(
        "POST", "/v1/runs", json=QUESTION, headers={"Origin": OTHER_ORIGIN} | bearer("alice")
    )
    preflight = await service.request(
        "OPTIONS",
        "/v1/runs",
        headers={
            "Origin": APP_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    allowances = (
        "Access-Control-Allow-Origin",
        "Access-Control-Allow-Credentials",
        "Access-Control-Allow-Methods",
        "Access-Control-Allow-Headers",
        "Access-Control-Max-Age",
        "Access-Control-Expose-Headers",
        "Vary",
    )
    return {
        "api/host-not-allowed": http(rebound, "Content-Type"),
        "api/cross-site": http(cross_site, "Content-Type"),
        "api/cors-preflight": http(preflight, *allowances),
    }


async def capture(env: Env) -> dict[str, str]:
    """Every Authentication sample of api.md, from a service with --auth keys and a keys file."""
    ids = Ids(seed="auth")
    settings = env.settings(
        auth="keys", api_keys_file=keys_file(env), secret=SECRET, cors_origins=APP_ORIGIN
    )
    captured: dict[str, str] = {}
    async with serving(env, settings) as service:
        captured |= await _keys_and_tokens(service, ids)
        captured |= await _session(service, ids)
        captured |= await _origins(service)
    return {name: ids(text) for name, text in captured.items()}
