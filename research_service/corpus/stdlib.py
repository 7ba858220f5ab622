"""The default corpus: the Python standard library's own docstrings and language reference."""

from __future__ import annotations

import ast
import functools
import importlib
import logging
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Final

from research_service.corpus.documents import Document, DocumentRef
from research_service.corpus.text import clean_rest, drop_underlines, sentences, shorten, squash

log = logging.getLogger(__name__)

# Bump when the extracted text changes shape, so every index re-reads the standard library.
EXTRACTOR_VERSION: Final = "stdlib-1"
PYTHON_VERSION: Final = ".".join(map(str, sys.version_info[:3]))
LIBRARY_URL: Final = "https://docs.python.org/3/library/"
DOCS_URL: Final = "https://docs.python.org/3/"
TITLE_CHARS: Final = 90
SIGNATURE_CHARS: Final = 160

SKIP_DIRS: Final = frozenset(
    {"test", "tests", "idlelib", "lib2to3", "turtledemo", "site-packages", "__pycache__"}
    | {"lib-dynload", "__phello__", "distutils"}  # distutils: deprecated, gone in 3.12
)
# Private modules that hold the documentation of a public one.
PUBLIC_NAMES: Final = {
    "__future__": "__future__",
    "_collections_abc": "collections.abc",
    "_pydecimal": "decimal",
    "concurrent.futures._base": "concurrent.futures",
    "posixpath": "os.path",
}
# Other platforms' twins and trivia; their names have no page of their own on docs.python.org.
SKIP_MODULES: Final = frozenset({"ntpath", "nturl2path", "genericpath", "antigravity", "this"})
# Written in C, so there is no source to parse. Importing these runs no Python code and has
# no side effects (unlike `antigravity` or `this`), so reading their docstrings is safe.
C_MODULES: Final = ("builtins", "sys", "itertools", "math", "cmath", "time", "gc", "array")
# Names the `site` module adds to `builtins`: interactive helpers, not the language.
SITE_NAMES: Final = frozenset({"copyright", "credits", "license", "exit", "quit", "help"})

# Which page of docs.python.org holds each `pydoc_data.topics` label (the anchor is the label).
TOPIC_PAGES: Final = {
    "reference/simple_stmts.html": "assert assignment augassign break continue del global "
    "import nonlocal pass raise return yield",
    "reference/compound_stmts.html": "async class compound else for function if try while with",
    "reference/expressions.html": "atom-identifiers atom-literals attribute-references await "
    "binary bitwise booleans calls comparisons conversions dict exprlists in lambda lists "
    "operator-summary power shifting slicings subscriptions unary",
    "reference/datamodel.html": "attribute-access callable-types context-managers "
    "customization numeric-types objects sequence-types specialnames types",
    "reference/executionmodel.html": "dynamic-features exceptions execmodel naming",
    "reference/lexical_analysis.html": "floating id-classes identifiers imaginary integers "
    "numbers strings",
    "library/stdtypes.html": "bltin-code-objects bltin-ellipsis-object bltin-null-object "
    "bltin-type-objects specialattrs string-methods truth typesfunctions typesmapping "
    "typesmethods typesmodules typesseq typesseq-mutable",
    "library/string.html": "formatstrings",
    "library/pdb.html": "debugger",
}
_PAGE_OF: Final = {label: page for page, labels in TOPIC_PAGES.items() for label in labels.split()}


def stdlib_root() -> Path:
    """The folder holding the running interpreter's standard library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_documents(root: Path | None = None) -> list[DocumentRef]:
    """References to every documented stdlib module, C module and reference topic."""
    base = stdlib_root() if root is None else root
    refs: list[DocumentRef] = []
    for path, name in _module_files(base):
        try:
            refs.append(_module_ref(path, name))
        except OSError as exc:  # removed or unreadable since the folder was listed
            log.warning("skipping stdlib module %s: %s", name, exc)
    refs.extend(_c_module_ref(name) for name in C_MODULES)
    refs.extend(_topic_refs(base / "pydoc_data" / "topics.py"))
    return refs


def _module_files(root: Path) -> Iterator[tuple[Path, str]]:
    """Every public module's source file under `root` with its dotted name, sorted."""
    found: list[tuple[Path, str]] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(("config-", "."))]
        rel = Path(folder).relative_to(root).parts
        if rel[:1] == ("encodings",):
            dirs.clear()  # codec tables: a hundred near-identical docstrings that drown searches
        for file in files:
            if not file.endswith(".py") or file == "__main__.py":
                continue
            stem = file[:-3]
            parts = rel if stem == "__init__" else (*rel, stem)
            if rel[:1] == ("encodings",) and stem != "__init__":
                continue
            name = ".".join(parts)
            if name in SKIP_MODULES:
                continue
            if name and (name in PUBLIC_NAMES or not any(p.startswith("_") for p in parts)):
                found.append((Path(folder, file), name))
    yield from sorted(found, key=lambda item: item[1])


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{EXTRACTOR_VERSION}:{PYTHON_VERSION}:{stat.st_mtime_ns}:{stat.st_size}"


def _module_ref(path: Path, name: str) -> DocumentRef:
    fingerprint = _fingerprint(path)
    return DocumentRef(
        key=f"stdlib:{name}",
        fingerprint=fingerprint,
        load=functools.partial(_load_module, path, name, fingerprint),
    )


def _load_module(path: Path, name: str, fingerprint: str) -> Document | None:
    """Parse one source file (never import it) into a document of its docstrings."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError) as exc:
        log.warning("skipping stdlib module %s: %s", name, exc)
        return None
    public = PUBLIC_NAMES.get(name, name)
    sections = [clean_rest(ast.get_docstring(tree) or "")]
    exported = _declared_all(tree)
    for node in tree.body:
        if not isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if not (node.name in exported if exported is not None else _is_public(node.name)):
            continue
        sections.append(_entry(node, public))
        if isinstance(node, ast.ClassDef):
            sections.extend(
                _entry(member, f"{public}.{node.name}")
                for member in node.body
                if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef)
                and _is_public(member.name)
            )
    return Document(
        key=f"stdlib:{name}",
        title=_title(public, sections[0]),
        url=f"{LIBRARY_URL}{public.split('.')[0]}.html#module-{public}",
        text="\n\n".join(s for s in sections if s),
        fingerprint=fingerprint,
    )


def _is_public(name: str) -> bool:
    return not name.startswith("_")


def _declared_all(tree: ast.Module) -> set[str] | None:
    """The literal `__all__` of a module, or None when it has none we can read."""
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
            and isinstance(node.value, ast.List | ast.Tuple)
        ):
            return {
                e.value
                for e in node.value.elts
                if isinstance(e, ast.Constant) and isinstance(e.value, str)
            }
    return None


def _entry(node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef, owner: str) -> str:
    """A heading like `json.dumps(obj, *, skipkeys=False)` over the docstring, or ''."""
    doc = ast.get_docstring(node)
    if not doc:
        return ""
    if isinstance(node, ast.ClassDef):
        return _section(f"{owner}.{node.name}", doc, kind="class")
    signature = shorten(ast.unparse(_without_self(node.args)), SIGNATURE_CHARS)
    kind = "coroutine" if isinstance(node, ast.AsyncFunctionDef) else ""
    return _section(f"{owner}.{node.name}({signature})", doc, kind=kind)


def _section(name: str, doc: str, *, kind: str = "") -> str:
    """`class `json.JSONDecoder`:` over the cleaned docstring, the way the docs show it."""
    prefix = f"{kind} " if kind else ""
    # One newline only: the heading stays in the same passage as the text under it, and
    # reads as the subject of the docstring's first sentence.
    return f"{prefix}`{name}`:\n{clean_rest(doc)}"


def _without_self(args: ast.arguments) -> ast.arguments:
    """A method's arguments without its leading `self` or `cls`, as the docs show them."""
    if not args.args or args.args[0].arg not in ("self", "cls"):
        return args
    rest = args.args[1:]
    # Defaults belong to the last parameters, so dropping the first leaves them aligned.
    defaults = args.defaults[-len(rest) :] if rest and args.defaults else []
    return ast.arguments(
        posonlyargs=args.posonlyargs,
        args=rest,
        vararg=args.vararg,
        kwonlyargs=args.kwonlyargs,
        kw_defaults=args.kw_defaults,
        kwarg=args.kwarg,
        defaults=defaults,
    )


def _title(name: str, doc: str) -> str:
    """`json — JSON (JavaScript Object Notation) is …`: the name and the first sentence."""
    first = sentences(doc.split("\n\n", 1)[0])
    return f"{name} — {shorten(first[0], TITLE_CHARS)}" if first else name


def _c_module_ref(name: str) -> DocumentRef:
    # Compiled in or shipped with this interpreter: it changes only with the Python version.
    fingerprint = f"{EXTRACTOR_VERSION}:{sys.version}:c"
    return DocumentRef(
        key=f"stdlib:{name}",
        fingerprint=fingerprint,
        load=functools.partial(_load_c_module, name, fingerprint),
    )


def _load_c_module(name: str, fingerprint: str) -> Document | None:
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        log.warning("skipping stdlib module %s: %s", name, exc)
        return None
    sections = [clean_rest(module.__doc__ or "")]
    sections.extend(_c_entries(module, name))
    url = f"{LIBRARY_URL}functions.html" if name == "builtins" else None
    return Document(
        key=f"stdlib:{name}",
        title=_title(name, sections[0]) if sections[0] else f"{name} — built-in functions",
        url=url or f"{LIBRARY_URL}{name}.html#module-{name}",
        text="\n\n".join(s for s in sections if s),
        fingerprint=fingerprint,
    )


def _c_entries(module: ModuleType, name: str) -> Iterator[str]:
    """Headings and docstrings of a C module's own public functions, classes and methods."""
    prefix = "" if name == "builtins" else f"{name}."
    for attr in sorted(vars(module)):
        obj = getattr(module, attr)
        if not _is_public(attr) or attr in SITE_NAMES or getattr(obj, "__module__", "") != name:
            continue
        if isinstance(obj, type):
            yield _c_entry(f"{prefix}{attr}", obj, kind="class")
            for member, value in sorted(vars(obj).items()):
                if _is_public(member) and callable(value):
                    yield _c_entry(f"{prefix}{attr}.{member}", value)
        elif callable(obj):
            yield _c_entry(f"{prefix}{attr}", obj)


def _c_entry(name: str, obj: object, *, kind: str = "") -> str:
    doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str) or not doc.strip():
        return ""
    signature = getattr(obj, "__text_signature__", None)
    if isinstance(signature, str) and not kind:
        name += signature.replace("$", "").replace("(module, ", "(").replace("(self, ", "(")
    return _section(name, doc, kind=kind)


def _topic_refs(path: Path) -> list[DocumentRef]:
    """One reference per language reference topic in `pydoc_data/topics.py`."""
    try:
        fingerprint = _fingerprint(path)
    except OSError as exc:
        log.warning("skipping the language reference topics: %s", exc)
        return []
    return [
        DocumentRef(
            key=f"topic:{label}",
            fingerprint=fingerprint,
            load=functools.partial(_load_topic, path, label, fingerprint),
        )
        for label in _read_topics(str(path), fingerprint)
    ]


@functools.lru_cache(maxsize=1)
def _read_topics(path: str, fingerprint: str) -> dict[str, str]:
    """The `topics` dict of `pydoc_data/topics.py`, read as a literal, never imported."""
    del fingerprint  # only part of the cache key: a changed file is read again
    try:
        tree = ast.parse(Path(path).read_bytes(), filename=path)
    except (OSError, SyntaxError, ValueError) as exc:
        log.warning("skipping the language reference topics: %s", exc)
        return {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "topics" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            if isinstance(value, dict):
                return {str(k): str(v) for k, v in value.items()}
    return {}


def _load_topic(path: Path, label: str, fingerprint: str) -> Document | None:
    text = _read_topics(str(path), fingerprint).get(label)
    if text is None:
        return None
    first, _, rest = drop_underlines(text).strip().partition("\n")
    title, body = squash(first) or label, rest.strip()
    page = _PAGE_OF.get(label, "reference/index.html")
    return Document(
        key=f"topic:{label}",
        title=title,
        url=f"{DOCS_URL}{page}#{label}",
        text=body,
        fingerprint=fingerprint,
    )
