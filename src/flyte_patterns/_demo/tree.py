"""The selection of the files of a source tree that the demo analyses, and their staging for a cluster run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

SOURCE_SUFFIX = ".py"

SKIPPED_DIRECTORIES = frozenset({"__pycache__", "site-packages", "dist-packages"})
"""Directories never entered: compiled caches, and installed third-party packages that are not the tree's own
source. Hidden directories (``.git``, ``.venv``) are skipped too."""

SELECTION_RULE = f"*{SOURCE_SUFFIX} files, outside hidden directories and {', '.join(sorted(SKIPPED_DIRECTORIES))}"
"""The rule of :func:`find_source_files` in words, for messages."""


def is_skipped_directory(name: str) -> bool:
    """Return whether the walk leaves out a directory of this name."""
    return name in SKIPPED_DIRECTORIES or name.startswith(".")


def find_source_files(root: str | Path) -> list[str]:
    """Return the relative POSIX paths of the Python files under ``root``, sorted.

    Symbolic links to files are listed like files; links to directories are not followed, so a link cycle cannot
    make the walk endless.

    Raises:
        NotADirectoryError: ``root`` is not a directory.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise NotADirectoryError(f"not a directory: {str(root_path)!r}")
    found: list[str] = []
    for directory, subdirectories, files in os.walk(root_path):
        subdirectories[:] = sorted(name for name in subdirectories if not is_skipped_directory(name))
        relative = Path(directory).relative_to(root_path)
        for name in files:
            if name.endswith(SOURCE_SUFFIX) and not name.startswith("."):
                found.append((relative / name).as_posix())
    found.sort()
    return found


def stage_files(root: str | Path, paths: Sequence[str], destination: str | Path) -> list[str]:
    """Copy the files ``paths`` (relative to ``root``) into ``destination`` under flat, unique names.

    A cluster run uploads the directory it is given. Staging uploads only the selected files, not the rest of the
    tree (the standard library's directory also contains compiled caches and installed packages). The names are flat
    (``00012-util.py``) because Flyte 2.12 uploads a local directory for a remote run file by file under each
    file's base name (``flyte.remote.upload_dir``), which would merge ``a/util.py`` and ``b/util.py``.

    Returns:
        The staged names, in the order of ``paths``.
    """
    target = Path(destination)
    target.mkdir(parents=True, exist_ok=True)
    width = len(str(len(paths)))
    names = []
    for number, relative in enumerate(paths):
        name = f"{number:0{width}}-{PurePosixPath(relative).name}"
        shutil.copyfile(Path(root, *PurePosixPath(relative).parts), target / name)
        names.append(name)
    return names
