"""What the scale bench asks: varied real questions about the standard library, one per run."""

from __future__ import annotations

from typing import Any, Final

#: Options of every run, as in issue 16.
OPTIONS: Final = {"breadth": 3, "max_sources": 8}

#: What each question asks how to do, in the words of the stdlib docs' readers.
TASKS: Final = (
    "parse JSON",
    "read a CSV file with a header row",
    "sort a list of dicts by a key",
    "run a shell command and capture its output",
    "parse command-line arguments with subcommands",
    "make an HTTP request without third-party packages",
    "format a datetime as an ISO 8601 string",
    "convert a timestamp to a timezone-aware datetime",
    "walk a directory tree and list every file",
    "copy a folder recursively",
    "create a temporary file that is deleted afterwards",
    "compress a file with gzip",
    "read a zip archive",
    "match an email address with a regular expression",
    "split a string on several delimiters",
    "count how often each word occurs",
    "give a dict a default value for missing keys",
    "define an immutable record type with named fields",
    "write a dataclass with default values",
    "define an enumeration",
    "cache the results of an expensive function",
    "run coroutines concurrently with asyncio",
    "set a timeout on an asyncio task",
    "run blocking code in a thread pool",
    "share data between processes",
    "use a lock to protect shared state between threads",
    "write log messages to a file with a timestamp",
    "hash a password securely",
    "generate a random secure token",
    "compute the SHA-256 of a file",
    "encode bytes as base64",
    "connect to a SQLite database and run a query",
    "serialize an object with pickle",
    "read a configuration file in INI format",
    "parse an XML document",
    "escape HTML special characters",
    "parse a URL into its parts",
    "build a query string from a dict",
    "send an email over SMTP",
    "open a TCP socket server",
    "measure how long a piece of code takes",
    "profile a function to find slow parts",
    "write a unit test with assertions",
    "mock an object in a test",
    "compare two sequences and show a diff",
    "wrap long text to a fixed width",
    "iterate over pairs of items with itertools",
    "chain several iterables together",
    "use decimal numbers for money",
    "work with fractions exactly",
    "compute the mean and standard deviation of a list",
    "generate random numbers from a normal distribution",
    "use a heap as a priority queue",
    "insert into a sorted list and keep it sorted",
    "copy an object deeply",
    "read environment variables",
    "handle signals such as SIGTERM",
    "work with file paths in an object-oriented way",
    "check the type of a value at runtime with typing",
    "use a context manager to clean up resources",
    "define an abstract base class",
    "read a file line by line lazily",
)
#: Ways to ask: run i asks task i, phrased by how many times the tasks went round.
PHRASINGS: Final = (
    "How do I {}?",
    "What is the best way to {} in Python?",
    "In Python, how can I {}?",
    "Which standard library module helps me {}?",
    "Show me how to {} with the standard library.",
    "How would I {} using only the stdlib?",
    "What is the idiomatic way to {}?",
    "I need to {}: how?",
    "Can you explain how to {}?",
    "How should I {} in Python 3?",
)


def question(index: int) -> str:
    """The `index`-th question of a step: every one distinct up to len(TASKS) * len(PHRASINGS)."""
    turn, task = divmod(index, len(TASKS))
    return PHRASINGS[turn % len(PHRASINGS)].format(TASKS[task])


def run_body(index: int) -> dict[str, Any]:
    """The `POST /v1/runs` body of the `index`-th run of a step."""
    return {"question": question(index), "options": dict(OPTIONS)}
