"""The bench's inputs: generated Markdown and PDF folders, and a mix of queries for the stdlib."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Final

from pypdf import PdfWriter
from pypdf.generic import ContentStream, DictionaryObject, NameObject

SEED: Final = 20261126
FOLDERS: Final = 20
PDF_LINES_PER_PAGE: Final = 40
# Words for generated prose: common enough to repeat across files, varied enough for bm25.
_VOCABULARY_TEXT: Final = """
    account adapter archive backup balance batch border branch bridge buffer cache canvas
    channel cluster column commit compiler config console contract cursor dashboard
    database deadline debugger deploy device digest domain driver editor encoder engine
    export feature filter folder format gateway graph handler header history index
    invoice journal kernel ledger library limit listener locale manifest marker matrix
    member message metric mirror module monitor network notebook object option package
    parser partner payload pipeline platform plugin policy pointer portal printer
    process profile project protocol proxy query queue record region release report
    request router runtime sample schema scheduler screen script section sensor server
    session shadow signal socket source sprint stack status storage stream subnet switch
    table target task template tenant thread ticket timer token topic tracker transfer
    trigger tunnel update upload vector vendor version viewer volume widget window worker
"""
_VOCABULARY: Final = _VOCABULARY_TEXT.split()
_VERB_TEXT: Final = """
    builds checks copies drops fetches formats joins loads merges opens parses reads
    resolves retries rotates saves sends sorts splits starts stops syncs tracks writes
"""
_VERBS: Final = _VERB_TEXT.split()


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_VOCABULARY) for _ in range(rng.randint(6, 16))]
    words.insert(rng.randint(1, len(words) - 1), rng.choice(_VERBS))
    return " ".join(words).capitalize() + "."


def _paragraph(rng: random.Random) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randint(2, 6)))


def markdown_folder(root: Path, *, files: int) -> Path:
    """`files` Markdown notes (about 1-6 KB each) in `FOLDERS` sub-folders, the same every run."""
    rng = random.Random(SEED)
    for number in range(files):
        folder = root / f"area-{number % FOLDERS:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        title = " ".join(rng.choice(_VOCABULARY) for _ in range(3)).title()
        parts = [f"# {title}", ""]
        for _ in range(rng.randint(2, 6)):
            parts += [f"## {rng.choice(_VOCABULARY).title()} {rng.choice(_VERBS)}", ""]
            parts += [_paragraph(rng), ""]
            if rng.random() < 0.3:
                parts += ["```sh", f"tool {rng.choice(_VERBS)} --{rng.choice(_VOCABULARY)}", "```"]
            if rng.random() < 0.3:
                parts += [f"See [the {rng.choice(_VOCABULARY)} notes](../other/{number}.md).", ""]
        (folder / f"note-{number:04d}.md").write_text("\n".join(parts), encoding="utf-8")
    return root


def pdf_folder(root: Path, *, files: int, pages: int) -> Path:
    """`files` PDFs of `pages` pages of text each (Helvetica, a text layer pypdf can read)."""
    rng = random.Random(SEED + 1)
    root.mkdir(parents=True, exist_ok=True)
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    for number in range(files):
        writer = PdfWriter()
        for _ in range(pages):
            page = writer.add_blank_page(612, 792)
            fonts = DictionaryObject({NameObject("/F1"): font})
            page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
            lines = [_sentence(rng) for _ in range(PDF_LINES_PER_PAGE)]
            shown = " 0 -16 Td ".join(f"({line}) Tj" for line in lines)
            content = ContentStream(None, writer)
            content.set_data(f"BT /F1 10 Tf 50 760 Td {shown} ET".encode("latin-1"))
            page.replace_contents(content)
        writer.add_metadata({"/Title": f"Report {number}"})
        with (root / f"report-{number:03d}.pdf").open("wb") as out:
            writer.write(out)
    return root


_QUESTIONS: Final = (
    "how do I {verb} {noun} in python",
    "what is the difference between {a} and {b}",
    "{verb} a {noun} with a timeout",
    "why does {noun} raise an error when I {verb} it",
    "best way to {verb} many {noun}s at once",
)
_QUESTION_VERB_TEXT: Final = """
    parse read write sort compare copy delete convert format send open split join
    download compress encrypt hash serialize schedule retry cancel iterate
"""
_QUESTION_VERBS: Final = _QUESTION_VERB_TEXT.split()
_QUESTION_NOUN_TEXT: Final = """
    json file csv row date timezone path directory url http request socket thread
    process queue dictionary list string bytes regex decimal random number zip archive
    log message email header cookie subprocess signal exception iterator generator
"""
_QUESTION_NOUNS: Final = _QUESTION_NOUN_TEXT.split()
_NO_HITS: Final = ("zqxv blorft", "qqq wwxyz", "xylophonic quasar", "grzmph")


def query_mix(names: list[str], *, count: int) -> list[tuple[str, str]]:
    """`count` (kind, query) pairs: module names, dotted names, questions, long ones, misses."""
    rng = random.Random(SEED + 2)
    dotted = [n for n in names if "." in n] or names
    mix: list[tuple[str, str]] = []
    for number in range(count):
        slot = number % 10
        if slot < 3:
            mix.append(("name", rng.choice(names)))
        elif slot < 4:
            mix.append(("dotted name", rng.choice(dotted)))
        elif slot < 8:
            template = _QUESTIONS[rng.randrange(len(_QUESTIONS))]
            a, b = rng.sample(_QUESTION_NOUNS, 2)
            verb, noun = rng.choice(_QUESTION_VERBS), rng.choice(_QUESTION_NOUNS)
            mix.append(("question", template.format(verb=verb, noun=noun, a=a, b=b)))
        elif slot < 9:
            words = rng.sample(_QUESTION_NOUNS + _QUESTION_VERBS, 24)
            mix.append(("long (24 words)", " ".join(words)))
        else:
            mix.append(("no match", rng.choice(_NO_HITS)))
    return mix
