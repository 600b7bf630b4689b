"""Three analysers of one Python source file, ordered by :func:`flyte_patterns.with_fallback`.

Each analyser reads the file's bytes and returns :class:`SourceStats`:

* ``lines``: line breaks as ``bytes.splitlines()`` counts them (``\\n``, ``\\r\\n`` and ``\\r``), the same for
  every analyser.
* ``functions``: ``def`` and ``async def`` statements at any depth, methods and nested functions included.
* ``classes``: ``class`` statements at any depth.
* ``imports``: ``import`` and ``from ... import`` statements.
* ``longest_function``: the dotted name (``Class.method``) of the function that spans the most lines, from its
  ``def`` line to the last line of its body, decorators left out. On a tie the first one in the file wins. An
  empty string when the file defines no function.

The chain, in order:

1. ``ast``: parses the file with :func:`ast.parse`, so the counts are exact.
2. ``tokenizer``: takes over when ``ast`` fails with ``SyntaxError``, ``UnicodeDecodeError`` or ``ValueError``
   (a null byte, on Python versions that report it so), or ``RecursionError`` (nesting too deep for the
   compiler). It reads the token stream of :mod:`tokenize`: a statement is counted by its first token, and a
   function ends where the indentation returns to the level of its ``def``. Python 2 code such as
   ``print "x"`` tokenizes, so this analyser serves it.
3. ``lines``: takes over on the same errors from either analyser, or on ``tokenize.TokenError`` (end of file
   inside a bracket or a string). It matches each line with regular expressions and ends a function at the
   first later line indented no deeper than its ``def``, so a line of a multi-line string that starts further
   left ends it early: an estimate. It decodes UTF-8 with replacement characters, so a stray byte in another
   encoding does not stop it, but it rejects binary content with ``ValueError``.

A file for which every analyser fails is *failed*, with every analyser's error class recorded. A file that
cannot be read is failed without any analyser running.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from flyte_patterns import AllAttemptsFailedError, Alternative, with_fallback

AST = "ast"
TOKENIZER = "tokenizer"
LINES = "lines"
ANALYSERS = (AST, TOKENIZER, LINES)
"""The analysers' names, in the order the chain tries them."""

# Errors on which the next analyser takes over. UnicodeDecodeError is a ValueError, and is listed because it is the
# usual failure of a file in an undeclared encoding.
AST_FAILURES: tuple[type[Exception], ...] = (SyntaxError, UnicodeDecodeError, ValueError, RecursionError)
TOKENIZER_FAILURES: tuple[type[Exception], ...] = (*AST_FAILURES, tokenize.TokenError)

# A file is binary when it contains a NUL byte, or when more than this share of its characters are control
# characters or bytes that are not valid UTF-8. Text in another 8-bit encoding stays far below it, while random
# bytes are about half invalid.
BINARY_SHARE = 0.1


@dataclass(frozen=True)
class SourceStats:
    """Counts that one analyser found in one file. The module docstring describes how each number is counted."""

    lines: int
    functions: int
    classes: int
    imports: int
    longest_function: str
    longest_function_lines: int


@dataclass(frozen=True)
class FileAnalysis:
    """The analysis of one file, and which analyser produced it.

    Attributes:
        analyser: The analyser that served the result (``"ast"``, ``"tokenizer"`` or ``"lines"``), or ``""`` when
            the file failed.
        fallback_reasons: The error class of each analyser that failed first, in order: empty when ``ast``
            served, ``["SyntaxError"]`` when the tokenizer took over from it, and so on. For a failed file, the
            errors of every analyser that ran.
        stats: The counts, or ``None`` when the file failed.
        error: For a failed file, the last error as ``"ClassName: message"``; otherwise ``""``.
    """

    analyser: str
    fallback_reasons: list[str] = field(default_factory=list)
    stats: SourceStats | None = None
    error: str = ""

    @property
    def failed(self) -> bool:
        """Whether no analyser could analyse the file."""
        return self.stats is None


# ---------------------------------------------------------------------------------------------------- the chain


async def analyse_source(data: bytes) -> FileAnalysis:
    """Analyse the bytes of one Python file with the first analyser of the chain that succeeds.

    Raises:
        Exception: An analyser failed with an error that is not a reason to fall back (``MemoryError``, say). It
            propagates as raised, with a note that lists the analysers that failed before it.
    """
    try:
        outcome = await with_fallback(
            ast_analyser,
            [
                Alternative(tokenizer_analyser, on=AST_FAILURES, name=TOKENIZER),
                Alternative(lines_analyser, on=TOKENIZER_FAILURES, name=LINES),
            ],
            data,
            return_outcome=True,
        )
    except AllAttemptsFailedError as error:
        reasons = [type(attempt.error).__name__ for attempt in error.attempts]
        last = error.attempts[-1].error
        return FileAnalysis(analyser="", fallback_reasons=reasons, error=describe_error(last))
    reasons = [type(attempt.error).__name__ for attempt in outcome.attempts if attempt.error is not None]
    return FileAnalysis(analyser=ANALYSERS[outcome.index], fallback_reasons=reasons, stats=outcome.value)


async def analyse_file(path: str | Path) -> FileAnalysis:
    """Read a file and analyse it. A file that cannot be read fails with its ``OSError`` and no analyser runs."""
    try:
        # A blocking read: the analysis right after it blocks the event loop far longer anyway.
        data = Path(path).read_bytes()  # noqa: ASYNC240
    except OSError as error:
        return FileAnalysis(analyser="", fallback_reasons=[], error=describe_error(error))
    return await analyse_source(data)


def describe_error(error: BaseException | None) -> str:
    """Return ``"ClassName: message"`` for a report, with the message shortened to one line of 200 characters."""
    if error is None:
        return ""
    message = " ".join(str(error).split())
    if len(message) > 200:
        message = message[:197] + "..."
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


async def ast_analyser(data: bytes) -> SourceStats:
    return analyse_with_ast(data)


async def tokenizer_analyser(data: bytes) -> SourceStats:
    return analyse_with_tokenizer(data)


async def lines_analyser(data: bytes) -> SourceStats:
    return analyse_lines(data)


# ---------------------------------------------------------------------------------------------------- counting


class _Tally:
    """Counts shared by the three analysers."""

    def __init__(self) -> None:
        self.functions = 0
        self.classes = 0
        self.imports = 0
        self.longest_name = ""
        self.longest_lines = 0
        self.longest_start = 0

    def function(self, name: str, start: int, end: int) -> None:
        self.functions += 1
        span = end - start + 1
        # Ties go to the function that starts first, whatever order an analyser finds them in.
        if span > self.longest_lines or (span == self.longest_lines and start < self.longest_start):
            self.longest_name, self.longest_lines, self.longest_start = name, span, start

    def stats(self, data: bytes) -> SourceStats:
        return SourceStats(
            lines=len(data.splitlines()),
            functions=self.functions,
            classes=self.classes,
            imports=self.imports,
            longest_function=self.longest_name,
            longest_function_lines=self.longest_lines,
        )


# ---------------------------------------------------------------------------------------------------- ast


def analyse_with_ast(data: bytes) -> SourceStats:
    """Count exactly with :func:`ast.parse`, which honours the file's encoding declaration and BOM.

    Only statement lists are walked, because functions, classes and imports are statements; that skips the
    expressions, which make up most of a tree. The walk uses an explicit stack, so deep nesting cannot overflow
    Python's recursion limit here.
    """
    tree = ast.parse(data)
    tally = _Tally()
    pending: list[tuple[list[ast.stmt], str]] = [(tree.body, "")]
    while pending:
        body, prefix = pending.pop()
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + node.name
                tally.function(name, node.lineno, node.end_lineno or node.lineno)
                pending.append((node.body, name + "."))
            elif isinstance(node, ast.ClassDef):
                tally.classes += 1
                pending.append((node.body, prefix + node.name + "."))
            elif isinstance(node, ast.Import | ast.ImportFrom):
                tally.imports += 1
            else:
                pending.extend((nested, prefix) for nested in _nested_bodies(node))
    return tally.stats(data)


def _nested_bodies(node: ast.stmt) -> Iterator[list[ast.stmt]]:
    """Yield the statement lists inside a compound statement (if, for, while, with, try, match)."""
    for name in ("body", "orelse", "finalbody"):
        value = getattr(node, name, None)
        if isinstance(value, list):
            yield value
    for handler in getattr(node, "handlers", ()):
        yield handler.body
    for case in getattr(node, "cases", ()):
        yield case.body


# ---------------------------------------------------------------------------------------------------- tokenizer


@dataclass
class _Scope:
    """A ``def`` or ``class`` found by the tokenizer or line analyser, open until its body ends."""

    kind: str
    name: str
    start: int
    level: int = 0
    last_line: int = 0


def analyse_with_tokenizer(data: bytes) -> SourceStats:
    """Count from the token stream, without parsing.

    A statement is recognised by its first token: at the start of a logical line, after ``;``, or after a ``:``
    outside brackets (so ``if x: import os`` counts). A function's body is the indented block after its header,
    or the rest of the header's logical line for a one-line ``def``.

    Raises:
        SyntaxError: The encoding declaration is invalid, or the text has a character that is no Python token
            (``tokenize`` reports it as an error token and goes on, but the counts would be guesses).
        UnicodeDecodeError: A line is invalid in the file's encoding.
        tokenize.TokenError: The file ends inside a bracket or a multi-line string.
    """
    tally = _Tally()
    open_scopes: list[_Scope] = []
    header: _Scope | None = None  # a def or class whose name or body has not been seen yet
    header_complete = False  # the header's logical line has ended, so the next token shows if a block follows
    level = 0  # indentation level, counted in INDENT and DEDENT tokens
    brackets = 0
    statement_start = True
    last_line = 0  # the last line of the latest complete logical line

    def close(scope: _Scope, end: int) -> None:
        qualified = ".".join([*(s.name for s in open_scopes), scope.name])
        if scope.kind == "def":
            tally.function(qualified, scope.start, end)
        else:
            tally.classes += 1

    for token in tokenize.tokenize(io.BytesIO(data).readline):
        kind = token.type
        if kind in (tokenize.ENCODING, tokenize.COMMENT, tokenize.NL):
            continue
        if kind == tokenize.ERRORTOKEN and not token.string.isspace():
            row, column = token.start
            raise SyntaxError(f"invalid token {token.string!r}", ("<tokenize>", row, column + 1, token.line))

        if header is not None and header_complete:
            if kind == tokenize.INDENT:
                level += 1
                header.level = level
                open_scopes.append(header)
                header = None
                header_complete = False
                continue
            # A one-line def or class: its body ended with its header's logical line.
            close(header, last_line)
            header = None
            header_complete = False

        if kind == tokenize.INDENT:
            level += 1
            continue
        if kind == tokenize.DEDENT:
            level -= 1
            while open_scopes and open_scopes[-1].level > level:
                close(open_scopes.pop(), last_line)
            continue

        if kind == tokenize.NEWLINE:
            last_line = token.start[0]
            statement_start = True
            if header is not None:
                header_complete = True
            continue
        elif kind == tokenize.OP:
            if token.string in "([{":
                brackets += 1
            elif token.string in ")]}":
                brackets = max(brackets - 1, 0)
            elif token.string == ";" or (token.string == ":" and brackets == 0):
                statement_start = True
                continue
        elif kind == tokenize.NAME:
            if header is not None and not header.name:
                header.name = token.string
            elif statement_start:
                if token.string == "async":
                    continue  # async def, async for, async with: the next token decides
                if token.string in ("def", "class"):
                    header = _Scope(kind=token.string, name="", start=token.start[0])
                elif token.string in ("import", "from"):
                    tally.imports += 1
        statement_start = False

    if header is not None:
        close(header, last_line)
    while open_scopes:
        close(open_scopes.pop(), last_line)
    return tally.stats(data)


# ---------------------------------------------------------------------------------------------------- lines


_DEF_LINE = re.compile(r"[ \t]*(?:async[ \t]+)?(def|class)[ \t]+([^\W\d]\w*)")
_IMPORT_LINE = re.compile(r"[ \t]*(?:import|from)[ \t]+[\w.]")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SUSPICIOUS = re.compile("[\x01-\x08\x0b\x0e-\x1f\x7f\ufffd]")


def decode_text(data: bytes) -> str:
    """Decode a file in its declared encoding, or UTF-8, replacing invalid bytes, and reject binary content.

    The encoding comes from a BOM or a coding declaration, as Python reads it. A declaration of an unknown
    encoding is ignored, and the file is read as UTF-8.

    Raises:
        ValueError: The file contains a NUL byte, or more than :data:`BINARY_SHARE` of its characters are control
            characters or invalid in the encoding.
    """
    nul = data.find(0)
    if nul >= 0:
        raise ValueError(f"binary content: NUL byte at offset {nul}")
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError:
        encoding = "utf-8"
    text = data.decode(encoding, errors="replace").removeprefix("\ufeff")
    # A U+FFFD already in the file counts as suspicious too, because real source rarely contains one.
    suspicious = len(_SUSPICIOUS.findall(text))
    if suspicious > BINARY_SHARE * len(text):
        raise ValueError(
            f"binary content: {suspicious} of {len(text)} characters are control characters or invalid {encoding}"
        )
    return text


def analyse_lines(data: bytes) -> SourceStats:
    """Count with a regular expression per line, and find function ends by indentation.

    Raises:
        ValueError: The content is binary (see :func:`decode_text`).
    """
    text = decode_text(data)
    tally = _Tally()
    open_scopes: list[_Scope] = []

    def close(scope: _Scope) -> None:
        qualified = ".".join([*(s.name for s in open_scopes), scope.name])
        if scope.kind == "def":
            tally.function(qualified, scope.start, scope.last_line)
        else:
            tally.classes += 1

    # Split where bytes.splitlines() does, so line numbers agree with the other analysers.
    for number, line in enumerate(_LINE_BREAK.split(text), start=1):
        stripped = line.lstrip(" \t\f")
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line[: len(line) - len(stripped)].expandtabs(8))
        while open_scopes and open_scopes[-1].level >= indent:
            close(open_scopes.pop())
        for scope in open_scopes:
            scope.last_line = number

        match = _DEF_LINE.match(line)
        if match:
            open_scopes.append(_Scope(kind=match[1], name=match[2], start=number, level=indent, last_line=number))
        elif _IMPORT_LINE.match(line):
            tally.imports += 1

    while open_scopes:
        close(open_scopes.pop())
    return tally.stats(data)
