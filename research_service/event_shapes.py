"""Event payload shapes, from the published JSON Schemas, as a reader of stored events needs.

A recording (or any copy of a run's events made outside the service) may have been edited by
hand: `payload_problem` says what makes an event's `data` no payload of its name, so a reader
refuses it at once instead of failing later on a field of the wrong type.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, Final, NamedTuple, TypeAlias

from research_service.events import EVENT_NAMES, dumps

#: The package's OpenAPI document: its component <Name>Event is docs/schemas/<name>.schema.json.
_DOCUMENT: Final = ("web", "static", "openapi.json")
_REF: Final = "#/components/schemas/"
_NOTES: Final = frozenset({"title", "description", "examples", "default", "$comment"})
#: Rules a reader need not hold a payload to: limits on values, and those that only forbid.
_LOOSE: Final = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}) | {
    *("multipleOf", "minLength", "maxLength", "pattern", "format", "minItems", "maxItems"),
    *("uniqueItems", "propertyNames", "not"),
}
_OBJECT: Final = frozenset({"required", "properties", "additionalProperties"})
_RULES: Final = frozenset(
    ("type", "enum", "const", "items", "allOf", "anyOf", "oneOf", "if", "$ref")
)
#: Each JSON type: the Python types json.loads gives, and what a complaint calls it.
_TYPES: Final = {"object": (dict,), "array": (list,), "string": (str,), "integer": (int,)} | {
    **{"number": (int, float), "boolean": (bool,), "null": (type(None),)}
}
_SAID: Final = {"object": "an object", "array": "an array", "integer": "an integer"} | {
    **{"boolean": "true or false", "null": "null", "string": "a string", "number": "a number"}
}
_KINDS: Final = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}


class PayloadProblem(NamedTuple):
    """Why some data is not its event's payload: which field (keys and indexes) and what."""

    path: tuple[str | int, ...]
    complaint: str

    @property
    def field(self) -> str:
        """The field as the docs write it, e.g. `data.sources[0].url`."""
        return "data" + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in self.path)


_Check: TypeAlias = Callable[[Any], PayloadProblem | None]


def payload_problem(name: str, data: Any) -> PayloadProblem | None:
    """What makes `data` no payload of event `name` by its JSON Schema (docs/schemas); or None.

    Checked: types at any depth, values the schema lists, and the fields the data itself must
    hold (for a `phase`, those of its kind). Not checked: limits on values, `not`, which fields
    a nested object holds, and fields the schema names nowhere for their object (a later
    release may add some). docs/recordings.md says it with examples.
    """
    return _payload_checks()[name](data)


@functools.cache
def _payload_checks() -> dict[str, _Check]:
    document = resources.files("research_service").joinpath(*_DOCUMENT).read_text("utf-8")
    schemas: dict[str, Any] = json.loads(document)["components"]["schemas"]
    data = _Place(schemas, known=None, title="", top=True)
    return {name: data.compile(schemas[f"{name.capitalize()}Event"]) for name in EVENT_NAMES}


def _fine(value: Any) -> None:
    return None


def _kind(value: Any) -> str:
    return "null" if value is None else _KINDS.get(type(value), "a number")


def _every(checks: list[_Check]) -> _Check:
    """One check of them all, in order: the first problem is the one reported."""
    checks = [check for check in checks if check is not _fine]
    if len(checks) <= 1:
        return checks[0] if checks else _fine

    def every(value: Any) -> PayloadProblem | None:
        for check in checks:
            if (problem := check(value)) is not None:
                return problem
        return None

    return every


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a subschema applies, which compiles it: its object's names, how to read it."""

    schemas: dict[str, Any]  # the document's, which refs point into
    known: frozenset[str] | None  # the names the schema gives this object in any variant
    title: str  # the nearest title: names the kind of payload in a complaint
    top: bool  # the data itself, where `required` binds

    def compile(self, schema: Any) -> _Check:
        """The check of `schema` here, built once; a rule it cannot read fails here, loudly."""
        if isinstance(schema, bool):
            return _fine if schema else lambda value: PayloadProblem((), "is not allowed here")
        known = self.names(schema) if self.known is None else self.known
        place = replace(self, known=known, title=schema.get("title", self.title))
        checks = [place.on_object(schema)] if _OBJECT.intersection(schema) else []
        for word, rule in schema.items():
            if word in _RULES:  # "allOf" is read by on_allof, "$ref" by on_ref
                checks.append(getattr(place, "on_" + word.lstrip("$").lower())(schema, rule))
            elif word not in _OBJECT | _NOTES | _LOOSE | {"then", "else"}:  # those go with "if"
                raise ValueError(f"payload_problem cannot read {word!r}; teach it")
        return _every(checks)

    def target(self, schema: Any) -> Any:
        """`schema`, or what its `$ref` points to."""
        ref = schema.get("$ref", "") if isinstance(schema, dict) else ""
        return self.schemas[ref.removeprefix(_REF)] if ref.startswith(_REF) else schema

    def names(self, schema: Any) -> frozenset[str]:
        """The field names `schema` gives the object it applies to, in any of its variants."""
        schema = self.target(schema)
        if not isinstance(schema, dict):
            return frozenset()
        subs = [*schema.get("allOf", ()), *schema.get("anyOf", ()), *schema.get("oneOf", ())]
        subs += [schema[word] for word in ("if", "then", "else") if word in schema]
        return frozenset(schema.get("properties", ())).union(*map(self.names, subs))

    def inner(self, schema: Any) -> _Check:
        """The check of a field's or an item's schema."""
        return replace(self, known=None, top=False).compile(schema)

    def on_type(self, schema: Any, rule: Any) -> _Check:
        kinds = (rule,) if isinstance(rule, str) else tuple(rule)
        said = f"must be {' or '.join(_SAID[kind] for kind in kinds)}, not "
        types, whole = frozenset(t for kind in kinds for t in _TYPES[kind]), "integer" in kinds

        def check(value: Any) -> PayloadProblem | None:
            # JSON has one kind of number: 2.0 is an integer.
            if type(value) in types or (whole and type(value) is float and value.is_integer()):
                return None
            return PayloadProblem((), said + _kind(value))

        return check

    def on_enum(self, schema: Any, rule: Any) -> _Check:
        values, texts = tuple(rule), frozenset(value for value in rule if isinstance(value, str))
        listed = ", ".join(v if isinstance(v, str) else dumps(v) for v in values)
        said = f"must be {'one of ' * (len(values) > 1)}{listed}, not "

        def check(value: Any) -> PayloadProblem | None:
            if value in texts if type(value) is str else any(_same(value, v) for v in values):
                return None
            shown = repr(value)[:40] if isinstance(value, str) else _kind(value)
            return PayloadProblem((), said + (dumps(value) if shown == "a number" else shown))

        return check

    def on_const(self, schema: Any, rule: Any) -> _Check:
        return self.on_enum(schema, [rule])

    def on_object(self, schema: Any) -> _Check:
        """`required`, `properties` and `additionalProperties`, in one pass over an object."""
        required = tuple(schema.get("required", ())) if self.top else ()
        declared, rest = schema.get("properties", {}), schema.get("additionalProperties", True)
        fields = [(key, self.inner(sub)) for key, sub in declared.items()]
        fields = [(key, check) for key, check in fields if check is not _fine]
        # A name the schema gives this object nowhere is a field a later release added: kept.
        # A name it gives another kind of this payload breaks the contract: refused.
        foreign = (self.known or frozenset()) - declared.keys() if rest is False else frozenset()
        each, said = _fine if rest is False else self.inner(rest), f"has no place in {self.title!r}"
        scan = bool(foreign) or each is not _fine

        def check(value: Any) -> PayloadProblem | None:
            if type(value) is not dict:
                return None
            for key in required:
                if key not in value:
                    return PayloadProblem((key,), "is missing")
            for key, field in fields:
                if key in value and (problem := field(value[key])) is not None:
                    return PayloadProblem((key, *problem.path), problem.complaint)
            for key, item in value.items() if scan else ():
                if key in foreign:
                    return PayloadProblem((key,), said)
                if key not in declared and (problem := each(item)) is not None:
                    return PayloadProblem((key, *problem.path), problem.complaint)
            return None

        return check

    def on_items(self, schema: Any, rule: Any) -> _Check:
        each = self.inner(rule)

        def check(value: Any) -> PayloadProblem | None:
            for index, item in enumerate(value if type(value) is list else ()):
                if (problem := each(item)) is not None:
                    return PayloadProblem((index, *problem.path), problem.complaint)
            return None

        return check

    def on_allof(self, schema: Any, rule: Any) -> _Check:
        return _every([self.compile(sub) for sub in rule])

    def on_anyof(self, schema: Any, rule: Any) -> _Check:
        """`anyOf`, and `oneOf` read as it: that two branches fit is a rule that only forbids."""
        branches, shapes = [self.compile(sub) for sub in rule], [self.target(s) for s in rule]

        def check(value: Any) -> PayloadProblem | None:
            problems = []
            for branch in branches:
                if (problem := branch(value)) is None:
                    return None
                problems.append(problem)
            return _closest(value, problems, shapes)

        return check

    on_oneof = on_anyof

    def on_if(self, schema: Any, rule: Any) -> _Check:
        # Read as loosely as the rest: the schemas' conditions only test values and presence.
        condition, then = self.compile(rule), self.compile(schema.get("then", True))
        otherwise = self.compile(schema.get("else", True))
        return lambda value: (then if condition(value) is None else otherwise)(value)

    def on_ref(self, schema: Any, rule: Any) -> _Check:
        return self.compile(self.target({"$ref": rule}))


def _same(value: Any, listed: Any) -> bool:
    """JSON equality, where true is not 1."""
    return bool(value == listed) and (type(value) is bool) == (type(listed) is bool)


def _closest(value: Any, problems: list[PayloadProblem], shapes: list[Any]) -> PayloadProblem:
    """The problem of the branch `value` comes closest to fitting, when none fits."""
    kinds = [shape.get("type") for shape in shapes]
    if all(kind in _TYPES for kind in kinds) and type(value) not in {
        t for kind in kinds for t in _TYPES[kind]
    }:
        expected = " or ".join(_SAID[kind] for kind in kinds)
        return PayloadProblem((), f"must be {expected}, not {_kind(value)}")

    def closeness(index: int) -> tuple[int, int]:
        # Most of its required fields there, then the latest of its fields to fail.
        shape, path = shapes[index], problems[index].path
        held = sum(key in value for key in shape.get("required", ())) if type(value) is dict else 0
        order = [*shape.get("properties", ())]
        return held, order.index(path[0]) if path and path[0] in order else -1

    return problems[max(range(len(problems)), key=closeness)]
