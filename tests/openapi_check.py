"""The published schemas as the tests check them: event payloads, recordings, HTTP responses.

docs/schemas/*.schema.json are the source of the event and recording JSON Schemas; the OpenAPI
document (research_service/web/static/openapi.json) embeds a copy of each under
`components.schemas`. `python -m tests.openapi_check` rewrites those copies from docs/schemas
(and says whether anything changed); tests/test_openapi.py fails while they differ.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

# jsonschema ships no type information (types-jsonschema is not a test dependency).
import jsonschema_rs
from jsonschema import Draft202012Validator, FormatChecker  # type: ignore[import-untyped]
from jsonschema.exceptions import best_match  # type: ignore[import-untyped]
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from research_service.client.sse import SSEParser

ROOT: Final = Path(__file__).resolve().parent.parent
SCHEMAS: Final = ROOT / "docs" / "schemas"
DOCUMENT: Final = ROOT / "research_service" / "web" / "static" / "openapi.json"
#: Each schema file and the name of its copy among the document's components.
COMPONENTS: Final = {
    "phase.schema.json": "PhaseEvent",
    "token.schema.json": "TokenEvent",
    "error.schema.json": "ErrorEvent",
    "done.schema.json": "DoneEvent",
    "recording.schema.json": "RecordingLine",
}
#: The event names of the stream and the schema file of each one's data.
EVENT_SCHEMAS: Final = {
    "phase": "phase.schema.json",
    "token": "token.schema.json",
    "error": "error.schema.json",
    "done": "done.schema.json",
}
_BASE: Final = "https://research-service.dev/schemas/"
_DOCUMENT_URI: Final = "urn:research-service:openapi"
_FORMATS: Final = FormatChecker()


def schema_file(name: str) -> dict[str, Any]:
    """One of docs/schemas, parsed."""
    schema: dict[str, Any] = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return schema


@functools.cache
def _registry() -> Registry[Any]:
    resources = [
        (_BASE + name, DRAFT202012.create_resource(schema_file(name))) for name in COMPONENTS
    ]
    registry: Registry[Any] = Registry().with_resources(resources)
    return registry


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    """A validator for schema file `name`, built once per test process."""
    return Draft202012Validator(schema_file(name), registry=_registry(), format_checker=_FORMATS)


def _fail_unless_valid(validator: Draft202012Validator, instance: Any, what: str) -> None:
    error = best_match(validator.iter_errors(instance))
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "(top)"
        shown = json.dumps(instance, ensure_ascii=False)[:500]
        raise AssertionError(f"{what} violates its schema at {where}: {error.message}\n{shown}")


@functools.cache
def _fast_validator(name: str) -> Any:
    """jsonschema-rs for event schema file `name` (they refer only to their own $defs)."""
    return jsonschema_rs.validator_for(schema_file(name), validate_formats=True)


def check_event(name: str, data: Any) -> None:
    """Fail (AssertionError) unless `data` is a valid payload of event `name`.

    Every event every test reads comes here: jsonschema-rs passes a valid one in microseconds
    (jsonschema takes up to half a millisecond for a `phase`); jsonschema has the last word
    on one it doubts, and says what is wrong.
    """
    schema = EVENT_SCHEMAS.get(name)
    if schema is None:
        raise AssertionError(f"event {name!r} is not one of the stream's {sorted(EVENT_SCHEMAS)}")
    if _fast_validator(schema).is_valid(data):
        return
    _fail_unless_valid(_validator(schema), data, f"a {name!r} event")


def check_recording_line(line: Any) -> None:
    """Fail unless `line` (one parsed line of a recording) is valid by recording.schema.json."""
    _fail_unless_valid(_validator("recording.schema.json"), line, "a recording line")


# --- the copies in the OpenAPI document ----------------------------------------------------


def _rewrite_refs(node: Any, *, refs: Mapping[str, str]) -> Any:
    """`node` with every `$ref` mapped through `refs` (a ref not in it is left as it is)."""
    if isinstance(node, dict):
        return {
            key: refs.get(value, value)
            if key == "$ref" and isinstance(value, str)
            else _rewrite_refs(value, refs=refs)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(item, refs=refs) for item in node]
    return node


def embedded_components() -> dict[str, Any]:
    """The document's copies of docs/schemas: no `$schema`/`$id`, `$defs` as components.

    A file's `$defs` entry `foo` becomes the component `<Name>Foo`, and refs between the
    files point at the components, so every ref resolves inside the document.
    """
    copies: dict[str, Any] = {}
    for name, component in COMPONENTS.items():
        schema = schema_file(name)
        defs = schema.pop("$defs", {})
        schema.pop("$schema", None)
        schema.pop("$id", None)
        refs = {file: f"#/components/schemas/{other}" for file, other in COMPONENTS.items()}
        named = {key: f"{component}{key[:1].upper()}{key[1:]}" for key in defs}
        refs.update({f"#/$defs/{key}": f"#/components/schemas/{n}" for key, n in named.items()})
        copies[component] = _rewrite_refs(schema, refs=refs)
        for key, value in defs.items():
            copies[named[key]] = _rewrite_refs(value, refs=refs)
    return copies


def load_document(path: Path = DOCUMENT) -> dict[str, Any]:
    """The OpenAPI document kept in the repository."""
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def dump_document(document: Mapping[str, Any]) -> str:
    """The document as the repository keeps it: indented, UTF-8, one final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def sync_document(path: Path = DOCUMENT) -> bool:
    """Rewrite the document's copies of docs/schemas; True when the file changed."""
    document = load_document(path)
    document["components"]["schemas"].update(embedded_components())
    text = dump_document(document)
    if text == path.read_text(encoding="utf-8"):
        return False
    path.write_text(text, encoding="utf-8")
    return True


# --- responses against the document --------------------------------------------------------


def operation_of(document: Mapping[str, Any], method: str, path: str) -> dict[str, Any]:
    """The operation documented for `method` on the path template `path`."""
    operations = document["paths"].get(path)
    assert operations is not None, f"{path} is not in the document"
    operation = operations.get(method.lower())
    assert operation is not None, f"{method} {path} is not in the document"
    resolved: dict[str, Any] = _resolved(document, operation)
    return resolved


def _resolved(document: Mapping[str, Any], node: Any) -> Any:
    """`node`, or what its `$ref` points at inside the document (followed until none)."""
    while isinstance(node, dict) and "$ref" in node and len(node) == 1:
        node = _pointer(document, node["$ref"])
    return node


def _pointer(document: Mapping[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only refs inside the document are expected, not {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


@functools.cache
def _document_registry(text: str) -> Registry[Any]:
    resource = DRAFT202012.create_resource(json.loads(text))
    registry: Registry[Any] = Registry().with_resource(_DOCUMENT_URI, resource)
    return registry


def _schema_validator(document: Mapping[str, Any], pointer: str) -> Draft202012Validator:
    registry = _document_registry(json.dumps(document, sort_keys=True))
    return Draft202012Validator(
        {"$ref": f"{_DOCUMENT_URI}#{pointer}"}, registry=registry, format_checker=_FORMATS
    )


def assert_valid(document: Mapping[str, Any], pointer: str, instance: Any) -> None:
    """Fail unless `instance` is valid by the schema at `pointer` (`/components/...`)."""
    _fail_unless_valid(_schema_validator(document, pointer), instance, f"an answer ({pointer})")


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _media_type(content: Mapping[str, Any], content_type: str) -> str | None:
    """The key of `content` that documents `content_type` (its parameters aside)."""
    essence = content_type.split(";", maxsplit=1)[0].strip().lower()
    for key in content:
        pattern = re.escape(key.lower()).replace(r"\*", "[^/]+")
        if re.fullmatch(pattern, essence):
            return str(key)
    return None


def check_response(
    document: Mapping[str, Any],
    *,
    method: str,
    path: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
) -> None:
    """Fail unless a response is what the document says `method path` answers with `status`.

    The status must be documented, every required header present and valid, the content
    type one of those documented, and the body valid by its schema: JSON as a whole, an
    event stream event by event (each event's data by its event schema too).
    """
    label = f"{method} {path} -> {status}"
    operation = operation_of(document, method, path)
    responses = operation["responses"]
    assert str(status) in responses, f"{label}: status not documented ({sorted(responses)})"
    response = _resolved(document, responses[str(status)])
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, spec in response.get("headers", {}).items():
        header = _resolved(document, spec)
        value = lowered.get(name.lower())
        if value is None:
            assert not header.get("required"), f"{label}: required header {name} missing"
            continue
        if "schema" in header:
            _fail_unless_valid(
                Draft202012Validator(header["schema"], format_checker=_FORMATS),
                value,
                f"{label}: header {name}",
            )
    content = response.get("content")
    if not content:
        assert not body, f"{label}: a body where the document has none"
        return
    content_type = lowered.get("content-type", "")
    key = _media_type(content, content_type)
    assert key is not None, f"{label}: content type {content_type!r} not in {sorted(content)}"
    if "schema" not in content[key]:
        return
    pointer = "/".join(
        ("", "paths", _escape(path), method.lower(), "responses", str(status), "content")
    )
    if "$ref" in responses[str(status)]:
        pointer = responses[str(status)]["$ref"][1:] + "/content"
    validator = _schema_validator(document, f"{pointer}/{_escape(key)}/schema")
    if key == "text/event-stream":
        for event in _events(body):
            _fail_unless_valid(validator, event, f"{label}: an event")
            check_event(event["event"], json.loads(event["data"]))
    elif key.endswith("json") and not key.endswith("x-ndjson"):
        _fail_unless_valid(validator, json.loads(body), label)
    elif key == "application/x-ndjson":
        for line in body.decode().split("\n")[:-1]:
            _fail_unless_valid(validator, json.loads(line), f"{label}: a line")
    else:
        _fail_unless_valid(validator, body.decode(), label)


def check_webhook(
    document: Mapping[str, Any], *, name: str, headers: Mapping[str, str], body: bytes
) -> None:
    """Fail unless a request the service sent is what the document's webhook `name` says."""
    operation = _resolved(document, document["webhooks"][name]["post"])
    lowered = {k.lower(): v for k, v in headers.items()}
    for parameter in operation.get("parameters", []):
        if parameter["in"] != "header":
            continue
        value = lowered.get(parameter["name"].lower())
        if value is None:
            assert not parameter.get("required"), f"webhook {name}: {parameter['name']} missing"
            continue
        _fail_unless_valid(
            Draft202012Validator(parameter["schema"], format_checker=_FORMATS),
            value,
            f"webhook {name}: header {parameter['name']}",
        )
    content = operation["requestBody"]["content"]
    key = _media_type(content, lowered.get("content-type", ""))
    assert key is not None, f"webhook {name}: content type {lowered.get('content-type')!r}"
    pointer = "/".join(("", "webhooks", name, "post", "requestBody", "content", _escape(key)))
    _fail_unless_valid(
        _schema_validator(document, f"{pointer}/schema"), json.loads(body), f"webhook {name}"
    )


def _events(body: bytes) -> Iterator[dict[str, Any]]:
    """A stream's events as OpenAPI 3.1 tools read them: `event`, `id`, `data` (a string)."""
    for message in SSEParser().feed(body):
        yield {"event": message.event, "id": message.id, "data": message.data}


def main() -> int:
    """Rewrite the document's copies of docs/schemas; exit 0 (unchanged) or 1 (rewritten)."""
    changed = sync_document()
    print(f"{DOCUMENT.relative_to(ROOT)}: {'rewritten' if changed else 'up to date'}")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
