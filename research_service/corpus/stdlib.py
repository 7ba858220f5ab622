"""The default corpus: the Python standard library's own docstrings and language reference."""

from __future__ import annotations

import ast
import functools
import logging
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from research_service.corpus.docstrings import SHORT_SUMMARY_CHARS, module_title, section
from research_service.corpus.documents import Document, DocumentRef
from research_service.corpus.python_source import parse_python
from research_service.corpus.stdlib_c import C_MODULES, LIBRARY_URL, load_c_module, reexports
from research_service.corpus.stdlib_topics import topic_refs
from research_service.text import clean_rest, shorten

log = logging.getLogger(__name__)

# Bump when the extracted text changes shape, so every index re-reads the standard library.
EXTRACTOR_VERSION: Final = "stdlib-2"
PYTHON_VERSION: Final = ".".join(map(str, sys.version_info[:3]))
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
    topics = base / "pydoc_data" / "topics.py"
    try:
        refs.extend(topic_refs(topics, _fingerprint(topics)))
    except OSError as exc:
        log.warning("skipping the language reference topics: %s", exc)
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
        tree = parse_python(path.read_bytes(), str(path))
    except (OSError, SyntaxError, ValueError) as exc:
        log.warning("skipping stdlib module %s: %s", name, exc)
        return None
    public = PUBLIC_NAMES.get(name, name)
    owner = _owner(path, public)
    lead = clean_rest(ast.get_docstring(tree) or "")
    exported = _declared_all(tree)
    defined: set[str] = set()
    sections: list[str] = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        defined.add(node.name)
        if not (node.name in exported if exported is not None else _is_public(node.name)):
            continue
        sections.append(_entry(node, owner))
        if isinstance(node, ast.ClassDef):
            sections.extend(
                _entry(member, f"{owner}.{node.name}")
                for member in node.body
                if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef)
                and _is_public(member.name)
            )

    def keep(attr: str) -> bool:
        """Re-exported from C and not redefined in Python, which then documents it."""
        wanted = attr in exported if exported is not None else _is_public(attr)
        return wanted and attr not in defined

    c_lead, c_entries = reexports(tree, owner, keep=keep)
    # `csv.py - read/write/investigate CSV files`: the C module's docstring says more.
    leads = [lead, c_lead] if len(lead) < SHORT_SUMMARY_CHARS else [lead]
    return Document(
        key=f"stdlib:{name}",
        title=module_title(public, lead or c_lead),
        url=f"{LIBRARY_URL}{public.split('.')[0]}.html#module-{public}",
        text="\n\n".join(s for s in [*leads, *sections, *c_entries] if s),
        fingerprint=fingerprint,
        name=public,
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
        return section(f"{owner}.{node.name}", doc, kind="class")
    signature = shorten(ast.unparse(_without_self(node.args)), SIGNATURE_CHARS)
    kind = "coroutine" if isinstance(node, ast.AsyncFunctionDef) else ""
    return section(f"{owner}.{node.name}({signature})", doc, kind=kind)


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


def _c_module_ref(name: str) -> DocumentRef:
    # Compiled in or shipped with this interpreter: it changes only with the Python version.
    fingerprint = f"{EXTRACTOR_VERSION}:{sys.version}:c"
    return DocumentRef(
        key=f"stdlib:{name}",
        fingerprint=fingerprint,
        load=functools.partial(load_c_module, name, fingerprint),
    )


@functools.lru_cache(maxsize=64)
def _star_imports(init: Path, package: str) -> frozenset[str]:
    """The submodules a package's `__init__.py` re-exports whole (`from .tasks import *`)."""
    try:
        source = init.read_bytes()
        # Most packages have none, and parsing a big `__init__.py` (tkinter's) is not free.
        tree = parse_python(source, str(init)) if b"import *" in source else None
    except (OSError, SyntaxError, ValueError):
        tree = None
    if tree is None:
        return frozenset()
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and [a.name for a in node.names] == ["*"]:
            if node.level == 1 and node.module:
                found.add(node.module)
            elif node.level == 0 and (node.module or "").startswith(f"{package}."):
                found.add((node.module or "").removeprefix(f"{package}."))
    return frozenset(found)


def _owner(path: Path, public: str) -> str:
    """The name the docs give a module's contents: `asyncio` for `asyncio.tasks`."""
    package, _, stem = public.rpartition(".")
    init = path.parent / "__init__.py"
    if package and path.name != "__init__.py" and stem in _star_imports(init, package):
        return package
    return public
