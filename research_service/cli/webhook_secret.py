"""`research-service webhook-secret`: the secret receivers verify the server's webhooks with."""

from __future__ import annotations

import argparse
from typing import Any

from research_service.auth.keys import NAME_RULE, check_name
from research_service.auth.secret import load_secret
from research_service.cli.catalogue import help_line
from research_service.cli.flags import say, settings_flags, settings_from
from research_service.errors import ConfigError
from research_service.webhooks.signing import SERVER_SCOPE, derived_secret, key_scope


def add_parser(commands: Any) -> None:
    """The `webhook-secret` sub-command."""
    parser = commands.add_parser(
        "webhook-secret",
        help=help_line("webhook-secret"),
        description="Print the whsec_ secret a receiver verifies this service's webhooks with: "
        "those of --webhook-url and of runs made with auth off, or with --key NAME those of the "
        "runs NAME's API key makes (also shown by `keys create`). It is derived from the "
        "service's signing secret (RESEARCH_SECRET or --data-dir/secret.key). When "
        "RESEARCH_WEBHOOK_SECRET is set it signs every webhook, and nothing is printed.",
    )
    parser.add_argument("--key", metavar="NAME", help=f"an API key's name ({NAME_RULE})")
    settings_flags(parser, only={"data_dir"})
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings.webhook_secret is not None:
        say("RESEARCH_WEBHOOK_SECRET is set: it signs every webhook; give receivers that")
        return 0
    scope = SERVER_SCOPE
    if args.key is not None:
        try:
            check_name(args.key)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        scope = key_scope(args.key)
    secret = derived_secret(load_secret(settings.secret, settings.data_dir), scope)
    print(secret, flush=True)
    return 0
