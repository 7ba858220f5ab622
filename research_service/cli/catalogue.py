"""The console script's sub-commands: each one's module and its line in `--help`.

Only the sub-command being run is imported (`commands.build_parser`): a command starts without
loading what the others need (the service, the HTTP client, the terminal display).
"""

from __future__ import annotations

from typing import Final

#: Each sub-command, in the order `--help` lists them: its module under research_service.cli,
#: and what it does in one line.
COMMANDS: Final = {
    "serve": ("serve", "run the HTTP service"),
    "ask": ("ask", "research a question and watch it live"),
    "listen": ("listen", "follow an existing run"),
    "plan": ("plan", "approve, edit or re-plan the plan of a run that waits for review"),
    "index": ("index", "index a folder of documents for `serve --corpus`"),
    "export": ("export", "write the recording of a finished run"),
    "replay": ("replay", "serve recorded runs through the HTTP API"),
    "keys": ("keys", "create, list and revoke API keys"),
    "migrate": ("migrate", "apply the run store's pending schema migrations"),
    "worker": ("worker", "execute runs of a cluster (no HTTP API)"),
    "webhook-secret": ("webhook_secret", "print the secret receivers verify webhooks with"),
    "mcp": ("mcp", "serve the research tools to AI assistants (Model Context Protocol)"),
}


def help_line(name: str) -> str:
    """The sub-command's line in `research-service --help`."""
    return COMMANDS[name][1]
