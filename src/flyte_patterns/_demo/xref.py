"""A cross-reference index of a source tree: which names are defined where, and which modules are imported where.

The index is deliberately built the simple, memory-hungry way: every file is loaded and kept in memory as a list
of lines, so each entry can be shown with its source line. Its memory therefore grows with the size of the tree,
which makes it the demo's step for the OOM retrier. For the 30 MB of Python 3.11's standard library it grows by
about 90 MB above the interpreter, measured on Linux as the growth of ``RssAnon``.

Lines are matched with regular expressions, so the index also covers files that do not parse, and, like the
line analyser, it can be misled by code-like lines inside multi-line strings:

* A *definition* is a ``def``, ``async def`` or ``class`` statement at any depth.
* An *import* is ``import a.b as c, d`` (modules ``a.b`` and ``d``) or ``from x import y`` (module ``x``), also
  with a parenthesised list of names over several lines. A relative module (``from .util import f`` in package
  ``pkg``) is resolved against the importing file's package (``pkg.util``).
* An import is *within the tree* when its module is a file of the tree (``a/b.py`` or ``a/b/__init__.py``).

Binary files (see :func:`flyte_patterns._demo.analysis.decode_text`) are skipped and counted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .analysis import decode_text

_DEFINITION = re.compile(r"[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+([^\W\d]\w*)")
_IMPORT = re.compile(r"[ \t]*import[ \t]+([^#;]+)")
_FROM_IMPORT = re.compile(r"[ \t]*from[ \t]+(\.*[\w.]*)[ \t]+import\b")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_MODULE_NAME = re.compile(r"[^\W\d]\w*(?:\.[^\W\d]\w*)*")

TOP = 10
"""How many entries the summary lists in each ranking."""


@dataclass(frozen=True)
class Ranked:
    """One entry of a ranking in the index summary.

    Attributes:
        name: The module or name.
        count: Files that import the module, or definitions of the name.
        example: The first occurrence as ``"path:line: source line"``.
    """

    name: str
    count: int
    example: str


@dataclass(frozen=True)
class IndexSummary:
    """The findings of the cross-reference index, small enough to return from a task.

    Attributes:
        files_indexed: Files loaded into the index.
        files_skipped: Binary files left out.
        lines: Lines held in memory.
        definitions: ``def`` and ``class`` statements found.
        names_defined: Distinct names among them.
        imports: Modules imported, counted once per import statement and module.
        modules_imported: Distinct modules among them.
        imports_within_tree: Imports whose module is a file of the tree.
        most_imported: The modules imported by the most files.
        most_defined: The names defined the most times.
    """

    files_indexed: int
    files_skipped: int
    lines: int
    definitions: int
    names_defined: int
    imports: int
    modules_imported: int
    imports_within_tree: int
    most_imported: list[Ranked] = field(default_factory=list)
    most_defined: list[Ranked] = field(default_factory=list)


class CrossReferenceIndex:
    """The whole index in memory: the lines of every file, and every definition and import with its location."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.lines: list[list[str]] = []
        self.definitions: dict[str, list[tuple[int, int]]] = {}
        self.imports: dict[str, list[tuple[int, int]]] = {}
        self.skipped: list[str] = []

    def add(self, path: str, data: bytes) -> None:
        """Index one file, given by its POSIX path relative to the tree's root and its bytes."""
        try:
            text = decode_text(data)
        except ValueError:
            self.skipped.append(path)
            return
        file_id = len(self.paths)
        lines = _LINE_BREAK.split(text)
        if lines and not lines[-1]:
            lines.pop()  # the empty string after a final line break is no line, as for bytes.splitlines()
        self.paths.append(path)
        self.lines.append(lines)
        package = _package_of(path)

        # Only the first line of a multi-line import is matched, because it names the module.
        for number, line in enumerate(lines, start=1):
            match = _DEFINITION.match(line)
            if match:
                self.definitions.setdefault(match[1], []).append((file_id, number))
                continue
            match = _FROM_IMPORT.match(line)
            if match:
                module = _resolve(match[1], package)
                if module:
                    self.imports.setdefault(module, []).append((file_id, number))
                continue
            match = _IMPORT.match(line)
            if match:
                for module in _imported_modules(match[1]):
                    self.imports.setdefault(module, []).append((file_id, number))

    def location(self, file_id: int, line: int) -> str:
        """Return ``"path:line: source line"`` for an entry."""
        return f"{self.paths[file_id]}:{line}: {self.lines[file_id][line - 1].strip()}"

    def summary(self, top: int = TOP) -> IndexSummary:
        """Summarise the index, with the ``top`` entries of each ranking."""
        modules = _modules_of(self.paths)
        importers = {module: len({file_id for file_id, _ in places}) for module, places in self.imports.items()}
        most_imported = sorted(importers.items(), key=lambda item: (-item[1], item[0]))[:top]
        most_defined = sorted(self.definitions.items(), key=lambda item: (-len(item[1]), item[0]))[:top]
        return IndexSummary(
            files_indexed=len(self.paths),
            files_skipped=len(self.skipped),
            lines=sum(len(lines) for lines in self.lines),
            definitions=sum(len(places) for places in self.definitions.values()),
            names_defined=len(self.definitions),
            imports=sum(len(places) for places in self.imports.values()),
            modules_imported=len(self.imports),
            imports_within_tree=sum(len(places) for module, places in self.imports.items() if module in modules),
            most_imported=[
                Ranked(module, count, self.location(*self.imports[module][0])) for module, count in most_imported
            ],
            most_defined=[Ranked(name, len(places), self.location(*places[0])) for name, places in most_defined],
        )


def build_index(root: str | Path, paths: Sequence[str], *, names: Sequence[str] | None = None) -> CrossReferenceIndex:
    """Load and index files under ``root``.

    Args:
        root: The directory that contains the files.
        paths: Each file's POSIX path relative to the root of its tree, as the index records it and resolves
            imports against.
        names: Where each file is under ``root``, when that differs from ``paths`` (files staged flat for a
            cluster run). Defaults to ``paths``.

    Raises:
        OSError: A file cannot be read.
        ValueError: ``names`` and ``paths`` differ in length.
    """
    locations = paths if names is None else names
    if len(locations) != len(paths):
        raise ValueError(f"names has {len(locations)} entries but paths has {len(paths)}; they must pair up")
    index = CrossReferenceIndex()
    for path, name in zip(paths, locations, strict=True):
        index.add(path, Path(root, *PurePosixPath(name).parts).read_bytes())
    return index


def _imported_modules(names: str) -> list[str]:
    """Return the modules of an ``import`` statement's list: ``"a.b as c, d"`` gives ``["a.b", "d"]``."""
    modules = []
    for part in names.split(","):
        module = part.strip().split(" ")[0].strip("()\\ \t")
        if _MODULE_NAME.fullmatch(module):
            modules.append(module)
    return modules


def _package_of(path: str) -> list[str]:
    """Return the package of a module file as a list of names: ``a/b/c.py`` and ``a/b/__init__.py`` are in a.b."""
    return list(PurePosixPath(path).parent.parts)


def _resolve(module: str, package: list[str]) -> str:
    """Return the absolute name of a ``from`` module, resolving leading dots against ``package``.

    Returns an empty string for a relative import that climbs above the tree's root.
    """
    dots = len(module) - len(module.lstrip("."))
    if dots == 0:
        return module
    if dots - 1 > len(package):
        return ""
    base = package[: len(package) - (dots - 1)]
    rest = module[dots:]
    return ".".join([*base, rest] if rest else base)


def _modules_of(paths: Sequence[str]) -> set[str]:
    """Return the dotted module names of the files: ``a/b.py`` is ``a.b`` and ``a/b/__init__.py`` is ``a.b``."""
    modules = set()
    for path in paths:
        parts = list(PurePosixPath(path).with_suffix("").parts)
        if parts and parts[-1] == "__init__":
            parts.pop()
        if parts:
            modules.add(".".join(parts))
    return modules
