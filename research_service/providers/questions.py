"""What a question asks: its key terms, how telling each is, its topic and its verb."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from research_service.text import key_terms

# Words that say what to do rather than what it is done to: a weaker query on their own.
_ACTION_TEXT: Final = (
    "add append call change check compare convert copy create debug define delete find "
    "format handle implement import install iterate join load loop merge open parse "
    "print read remove replace return run save send sort split start stop test update "
    "write"
)
ACTION_WORDS: Final = frozenset(_ACTION_TEXT.split())
# True of nearly every document in a Python corpus, so they narrow nothing down.
_VAGUE_TEXT: Final = (
    "python code program example examples thing things work works difference best "
    "function functions method methods module modules make makes"
)
VAGUE_WORDS: Final = frozenset(_VAGUE_TEXT.split())
# What a question's action is done to, but rarely what it is about.
GENERIC_WORDS: Final = frozenset({"file", "files", "data", "object", "objects", "value", "values"})
# What a question's words are usually called in documentation, most common first.
RELATED_TERMS: Final = {
    "parse": ("decode", "load", "deserialize", "loads", "read"),
    "sort": ("sorted",),
    "serialize": ("encode", "dump", "dumps", "write"),
    "convert": ("encode", "decode", "format", "cast"),
    "download": ("urlopen", "fetch", "request", "retrieve"),
    "request": ("urlopen",),
    "fetch": ("urlopen", "request", "get"),
    "delete": ("remove", "unlink", "rmtree"),
    "remove": ("delete", "unlink", "discard", "pop"),
    "run": ("execute", "call", "subprocess"),
    "concurrent": ("thread", "threads", "asyncio", "parallel"),
    "parallel": ("concurrent", "thread", "process", "multiprocessing"),
    "copy": ("copyfile", "duplicate", "clone"),
}
# How many related words a query adds; more would drift off the topic.
MAX_RELATED: Final = 2
IDENTIFIER: Final = 3.0
ACRONYM: Final = 2.5
PLAIN: Final = 2.0
WEAK: Final = 1.0

# "How do I read …", "how can you make …", "how to sort …": the word after is the verb.
_HOW_VERB = re.compile(
    r"(?i)\s*how\s+(?:(?:do|can|could|should|would)\s+(?:i|you|we|one)|to)\s+(\w+)"
)


@dataclass(frozen=True, slots=True)
class Question:
    """A question's key terms in order, the verb of a "how do I" one, and its capitals."""

    terms: tuple[str, ...]
    verb: str
    capitals: frozenset[str]

    @classmethod
    def read(cls, text: str) -> Question:
        """Read `text` for its terms and verb."""
        found = _HOW_VERB.match(text)
        verb = found.group(1).lower() if found else ""
        capitals = frozenset(w.lower() for w in re.findall(r"\b[A-Z][A-Z0-9]+\b", text))
        return cls(terms=tuple(key_terms(text)), verb=verb, capitals=capitals)

    def specificity(self, term: str) -> float:
        """How narrowly `term` picks out documents: identifiers most, vague words not at all."""
        if "." in term or "_" in term or any(c.isdigit() for c in term):
            return IDENTIFIER  # names exactly one thing
        if term in VAGUE_WORDS:
            return 0.0
        if term == self.verb or term in ACTION_WORDS or term in GENERIC_WORDS:
            return WEAK
        # Written in capitals (CSV, JSON, HTTP): an acronym, usually what the question is about.
        return ACRONYM if term in self.capitals else PLAIN

    @property
    def useful(self) -> list[str]:
        """The terms that narrow a search down (all of them if none does)."""
        return [t for t in self.terms if self.specificity(t) > 0] or list(self.terms)

    @property
    def subjects(self) -> list[str]:
        """The terms that say what the question is about, not what to do with it."""
        return [t for t in self.terms if self.specificity(t) >= PLAIN]

    @property
    def topic(self) -> str:
        """The most specific term (the first of equals): what the question is about."""
        return max(self.terms, key=self.specificity) if self.terms else ""

    @property
    def related(self) -> list[str]:
        """What the docs may call the question's terms (`decode`, `load` for "parse").

        A verb's only when the question has at most one subject: "parse JSON" is decoding, but
        "parse command line arguments" is not.
        """
        one_subject = len(self.subjects) <= 1
        found = [
            r
            for t in self.useful
            if one_subject or self.specificity(t) >= PLAIN
            for r in RELATED_TERMS.get(t, ())
            if r not in self.terms
        ]
        return list(dict.fromkeys(found))[:MAX_RELATED]
