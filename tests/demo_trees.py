"""Source trees for the demo's tests, written into a temporary directory so their numbers are known exactly."""

from __future__ import annotations

import random
from pathlib import Path

# One well-formed module. Its counts, as the ast analyser finds them, are in GOOD_MODULE_STATS.
GOOD_MODULE = '''"""A small module that every analyser reads the same way."""

import os
from collections import OrderedDict


class Greeter:
    """Greets by name."""

    def __init__(self, name):
        self.name = name

    def greet(self):
        if self.name:
            return "hello " + self.name
        return "hello"


def main():
    table = OrderedDict()
    for key in os.environ:
        table[key] = len(key)
    return table
'''
GOOD_MODULE_STATS = {"lines": 23, "functions": 3, "classes": 1, "imports": 2, "longest_function_lines": 5}

# Python 2 code: ast rejects the print statement, and the tokenizer reads it.
PY2_MODULE = """import sys

print "hello"


def legacy():
    print "old"
    return 1
"""
PY2_MODULE_STATS = {"lines": 8, "functions": 1, "classes": 0, "imports": 1, "longest_function_lines": 3}


def write_source_tree(root: Path, modules: int = 6) -> list[str]:
    """Write a package of good modules and one Python 2 file, plus files the demo must skip.

    Returns:
        The relative paths the demo selects, sorted.
    """
    package = root / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""The package."""\nfrom .mod_0 import Greeter\n')
    for number in range(modules):
        (package / f"mod_{number}.py").write_text(GOOD_MODULE)
    (root / "legacy").mkdir()
    (root / "legacy" / "old_print.py").write_text(PY2_MODULE)

    # Never selected: caches, installed packages, hidden directories, and files that are not Python.
    for skipped in ("pkg/__pycache__", "site-packages/dep", ".venv/lib"):
        (root / skipped).mkdir(parents=True)
        (root / skipped / "ignored.py").write_bytes(b"\x00\x01 not source")
    (root / "README.txt").write_text("not Python\n")

    return sorted(["pkg/__init__.py", *(f"pkg/mod_{n}.py" for n in range(modules)), "legacy/old_print.py"])


def write_junk_tree(root: Path, files: int = 24, size: int = 2048, seed: int = 7) -> list[str]:
    """Write ``files`` Python-named files of random bytes, each with a NUL byte, so every analyser fails on them.

    Returns:
        The relative paths, sorted.
    """
    generator = random.Random(seed)
    directory = root / "junk"
    directory.mkdir(parents=True)
    paths = []
    for number in range(files):
        data = bytearray(generator.randbytes(size))
        data[generator.randrange(size)] = 0
        (directory / f"blob_{number:03}.py").write_bytes(bytes(data))
        paths.append(f"junk/blob_{number:03}.py")
    return sorted(paths)


def write_large_tree(root: Path, files: int = 40, functions_per_file: int = 400) -> list[str]:
    """Write a tree whose cross-reference index needs several megabytes: many short, distinct definitions.

    Returns:
        The relative paths, sorted.
    """
    directory = root / "big"
    directory.mkdir(parents=True)
    paths = []
    for number in range(files):
        body = "".join(
            f"def function_{number}_{index}(value):\n    return value + {index}  # a comment to fill the line\n\n"
            for index in range(functions_per_file)
        )
        (directory / f"module_{number:03}.py").write_text(f"import os\nimport sys\n\n{body}")
        paths.append(f"big/module_{number:03}.py")
    return sorted(paths)
