"""Standard Webhooks signatures, and where each delivery's secret comes from.

Signing itself is the `standardwebhooks` package's (the reference implementation); this module
only decides the secret: RESEARCH_WEBHOOK_SECRET when set, else one derived from the service's
signing secret for the API key that asked (shown by `keys create`), or for the server as a
whole (`research-service webhook-secret`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from standardwebhooks.webhooks import Webhook

from research_service.errors import ConfigError

SECRET_PREFIX: Final = "whsec_"
#: The scope of deliveries no API key asked for: --webhook-url, and runs made with auth off.
SERVER_SCOPE: Final = "server"
_LABEL: Final = b"research-service webhook secret "


def derived_secret(signing_secret: bytes, scope: str) -> str:
    """The `whsec_` secret of `scope` (an API key name's, or SERVER_SCOPE)."""
    digest = hmac.new(signing_secret, _LABEL + scope.encode(), hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(digest).decode()


def key_scope(owner: str) -> str:
    """The scope of deliveries asked for by the owner (API key name) `owner`."""
    return f"key:{owner}"


class Signer:
    """Signs deliveries: with the configured secret, else each scope's derived one."""

    def __init__(self, *, signing_secret: Callable[[], bytes], configured: str | None) -> None:
        # Read when first needed: a service that sends no webhook never makes the secret.
        self._load = signing_secret
        self._signing_secret: bytes | None = None
        self._configured = None if configured is None else _webhook(configured)

    def secret_for(self, scope: str) -> str:
        """The secret a receiver of `scope`'s deliveries verifies with."""
        if self._signing_secret is None:
            self._signing_secret = self._load()
        return derived_secret(self._signing_secret, scope)

    def headers(self, *, msg_id: str, body: str, scope: str, now: float) -> dict[str, str]:
        """The three Standard Webhooks headers for `body`, sent now."""
        webhook = self._configured or _webhook(self.secret_for(scope))
        moment = datetime.fromtimestamp(int(now), tz=UTC)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now)),
            "webhook-signature": webhook.sign(msg_id, moment, body),
        }


def _webhook(secret: str) -> Webhook:
    try:
        return Webhook(secret)
    except Exception as exc:  # noqa: BLE001 - the package raises several kinds for a bad secret
        raise ConfigError(
            f"RESEARCH_WEBHOOK_SECRET is not a usable secret ({type(exc).__name__}); "
            "give whsec_ followed by base64, e.g. from `research-service webhook-secret`"
        ) from None
