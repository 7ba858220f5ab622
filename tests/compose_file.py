"""Read a compose file's services the way the tests need, without a YAML library.

Enough YAML for docker-compose.yml and for what `docker-compose config` prints: block mappings
indented by spaces, `- item` lists (indented under their key or not), one-line flow lists, and
anchors (`key: &name`) with their aliases (`key: *name`), which are expanded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

_KEY: Final = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?: +(?P<value>.*))?$")
_ANCHOR: Final = re.compile(r"^&(?P<name>[A-Za-z0-9_-]+)$")
_ANCHORED: Final = re.compile(r": +&[A-Za-z0-9_-]+$")
_ALIAS: Final = re.compile(r"^\*(?P<name>[A-Za-z0-9_-]+)$")
#: `${NAME:-default}`: the default a variable takes when the shell does not set it.
DEFAULTED: Final = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):-(?P<default>[^}]*)\}")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block(lines: list[str], at: int) -> list[str]:
    """The lines under lines[at] (a `key:` line): those indented deeper, and `- ` items level.

    Blank and comment lines are left out: they say nothing, and a comment may sit at any depth.
    """
    own = _indent(lines[at])
    block: list[str] = []
    for line in lines[at + 1 :]:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if _indent(line) < own or (_indent(line) == own and not line.lstrip().startswith("- ")):
            break
        block.append(line)
    return block


def _reindent(block: list[str], indent: int) -> list[str]:
    """`block` moved so that its least indented line starts at `indent` spaces."""
    filled = [line for line in block if line.strip()]
    shift = indent - min((_indent(line) for line in filled), default=indent)
    return [" " * shift + line if shift >= 0 else line[-shift:] for line in block]


def expand_aliases(text: str) -> list[str]:
    """The file's lines with each `key: *name` replaced by the block `key: &name` defines."""
    lines = [line.rstrip() for line in text.splitlines()]
    anchors: dict[str, list[str]] = {}
    for at, line in enumerate(lines):
        match = _KEY.match(line)
        if match and match["value"] and (anchor := _ANCHOR.match(match["value"])):
            anchors[anchor["name"]] = _block(lines, at)
    expanded: list[str] = []
    for line in lines:
        match = _KEY.match(line)
        if match and match["value"] and (alias := _ALIAS.match(match["value"])):
            expanded.append(f"{match['indent']}{match['key']}:")
            expanded += _reindent(anchors[alias["name"]], len(match["indent"]) + 2)
        else:
            expanded.append(line)
    # The anchors themselves (in the file, and in the blocks copied for aliases) say nothing.
    return [_ANCHORED.sub(":", line) for line in expanded]


def _unquote(value: str) -> str:
    value = value.split(" #", 1)[0].strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


@dataclass(frozen=True)
class Service:
    """One service's lines (aliases expanded), read key by key."""

    name: str
    lines: list[str]

    def _at(self, key: str) -> int | None:
        top = min((_indent(line) for line in self.lines), default=0)
        for at, line in enumerate(self.lines):
            match = _KEY.match(line)
            if match and match["key"] == key and len(match["indent"]) == top:
                return at
        return None

    def keys(self) -> list[str]:
        """The keys at the top level of the service's lines, in order."""
        top = min((_indent(line) for line in self.lines), default=0)
        return [
            match["key"]
            for line in self.lines
            if (match := _KEY.match(line)) and len(match["indent"]) == top
        ]

    def has(self, key: str) -> bool:
        """Whether the service sets `key` (at its top level)."""
        return self._at(key) is not None

    def value(self, key: str) -> str | None:
        """The one-line value of a top-level `key`, unquoted; None when absent or a block."""
        at = self._at(key)
        if at is None:
            return None
        match = _KEY.match(self.lines[at])
        assert match is not None
        return _unquote(match["value"]) if match["value"] else None

    def items(self, key: str) -> list[str]:
        """A list under `key`, as `- item` lines or as a one-line flow list `[a, "b"]`."""
        at = self._at(key)
        if at is None:
            return []
        flow = self.value(key)
        if flow is not None:
            assert flow.startswith("["), f"{key}: {flow}"
            assert flow.endswith("]"), f"{key}: {flow}"
            return [_unquote(item) for item in flow[1:-1].split(",") if item.strip()]
        block = _block(self.lines, at)
        return [_unquote(line.strip()[2:]) for line in block if line.strip().startswith("- ")]

    def child(self, key: str) -> Service:
        """The block under a top-level `key`, read the same way (empty when absent)."""
        at = self._at(key)
        return Service(key, [] if at is None else _block(self.lines, at))

    def mapping(self, key: str) -> dict[str, str]:
        """The `NAME: value` pairs of a block under `key` (values unquoted)."""
        at = self._at(key)
        if at is None:
            return {}
        pairs: dict[str, str] = {}
        block = [line for line in _block(self.lines, at) if line.strip()]
        top = min((_indent(line) for line in block), default=0)
        for line in block:
            match = _KEY.match(line)
            if match and len(match["indent"]) == top:
                pairs[match["key"]] = _unquote(match["value"] or "")
        return pairs


def services(text: str) -> dict[str, Service]:
    """Each service of a compose file (or of `docker-compose config`'s output), by name."""
    lines = expand_aliases(text)
    at = lines.index("services:")
    block = _block(lines, at)
    found: dict[str, Service] = {}
    for index, line in enumerate(block):
        match = _KEY.match(line)
        if match and len(match["indent"]) == 2:
            found[match["key"]] = Service(match["key"], _block(block, index))
    return found


def with_defaults(value: str) -> str:
    """`value` with every `${NAME:-default}` in it replaced by its default."""
    return DEFAULTED.sub(lambda match: match["default"], value)
