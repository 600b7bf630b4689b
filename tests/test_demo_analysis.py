"""The demo's analysers, the fallback chain that orders them, and the cross-reference index, in-process."""

from __future__ import annotations

import tokenize
from pathlib import Path

import pytest

from flyte_patterns._demo.analysis import (
    SourceStats,
    analyse_file,
    analyse_lines,
    analyse_source,
    analyse_with_ast,
    analyse_with_tokenizer,
    decode_text,
)
from flyte_patterns._demo.tree import find_source_files, stage_files
from flyte_patterns._demo.xref import build_index

from .demo_trees import GOOD_MODULE, GOOD_MODULE_STATS, PY2_MODULE, PY2_MODULE_STATS, write_source_tree

ANALYSERS = [analyse_with_ast, analyse_with_tokenizer, analyse_lines]

NESTED = b"""import a; import b
if True: import c

class Outer:
    @staticmethod
    def method():
        def inner():
            return 1
        return inner

    class Inner:
        async def deep(self):
            pass

def one_liner(): return 2
"""


def _counts(stats: SourceStats) -> dict[str, int]:
    return {
        "lines": stats.lines,
        "functions": stats.functions,
        "classes": stats.classes,
        "imports": stats.imports,
        "longest_function_lines": stats.longest_function_lines,
    }


@pytest.mark.parametrize("analyser", ANALYSERS)
def test_analysers_count_good_module(analyser: object) -> None:
    assert callable(analyser)
    stats = analyser(GOOD_MODULE.encode())
    assert _counts(stats) == GOOD_MODULE_STATS
    assert stats.longest_function == "main"


@pytest.mark.parametrize("analyser", [analyse_with_ast, analyse_with_tokenizer])
def test_exact_analysers_agree_on_nesting(analyser: object) -> None:
    assert callable(analyser)
    stats = analyser(NESTED)
    assert stats.functions == 4
    assert stats.classes == 2
    assert stats.imports == 3
    assert stats.longest_function == "Outer.method"
    assert stats.longest_function_lines == 4


def test_tokenizer_agrees_with_ast_on_stdlib_samples() -> None:
    # Real files of the running Python, chosen for their variety: decorators, nested classes, async code.
    import asyncio.tasks
    import dataclasses
    import json.decoder

    for module in (asyncio.tasks, dataclasses, json.decoder):
        assert module.__file__ is not None
        data = Path(module.__file__).read_bytes()
        assert analyse_with_tokenizer(data) == analyse_with_ast(data), module.__name__


def test_line_analyser_counts_crlf_and_cr_lines() -> None:
    data = b"import os\r\ndef f():\r    return 1\n"
    stats = analyse_lines(data)
    assert stats.lines == 3
    assert stats.functions == 1
    assert stats.longest_function_lines == 2


def test_ast_fails_on_python2() -> None:
    with pytest.raises(SyntaxError):
        analyse_with_ast(PY2_MODULE.encode())


def test_tokenizer_rejects_invalid_character() -> None:
    with pytest.raises(SyntaxError, match="invalid token"):
        analyse_with_tokenizer("\u20ac = 2\n".encode())


def test_tokenizer_fails_on_open_bracket() -> None:
    with pytest.raises(tokenize.TokenError):
        analyse_with_tokenizer(b"def f(:\n  pass\n")


def test_decode_text_rejects_nul_byte() -> None:
    with pytest.raises(ValueError, match="NUL byte at offset 5"):
        decode_text(b"a = 1\x00\n")


def test_decode_text_rejects_control_characters() -> None:
    with pytest.raises(ValueError, match="binary content"):
        decode_text(bytes(range(1, 32)) * 4)


def test_decode_text_honours_coding_declaration() -> None:
    data = "# -*- coding: koi8-r -*-\ns = 'привет'\n".encode("koi8-r")
    assert decode_text(data).endswith("'привет'\n")


def test_decode_text_tolerates_stray_byte() -> None:
    assert decode_text(b'print("b\xf6se")\n') == 'print("b\ufffdse")\n'


async def test_chain_uses_ast_for_good_module() -> None:
    analysis = await analyse_source(GOOD_MODULE.encode())
    assert analysis.analyser == "ast"
    assert analysis.fallback_reasons == []
    assert analysis.stats is not None
    assert _counts(analysis.stats) == GOOD_MODULE_STATS


async def test_chain_falls_back_to_tokenizer() -> None:
    analysis = await analyse_source(PY2_MODULE.encode())
    assert analysis.analyser == "tokenizer"
    assert analysis.fallback_reasons == ["SyntaxError"]
    assert analysis.stats is not None
    assert _counts(analysis.stats) == PY2_MODULE_STATS


async def test_chain_falls_back_to_lines_on_bad_cookie() -> None:
    analysis = await analyse_source(b"# -*- coding: uft-8 -*-\nimport os\n")
    assert analysis.analyser == "lines"
    assert analysis.fallback_reasons == ["SyntaxError", "SyntaxError"]
    assert analysis.stats is not None
    assert analysis.stats.imports == 1


async def test_chain_falls_back_to_lines_on_token_error() -> None:
    analysis = await analyse_source(b"def f(:\n    pass\n")
    assert analysis.analyser == "lines"
    assert analysis.fallback_reasons == ["SyntaxError", "TokenError"]


async def test_chain_fails_on_binary() -> None:
    analysis = await analyse_source(b"\xff\xfe\x00\x01 garbage \x02\x03")
    assert analysis.failed
    assert analysis.analyser == ""
    assert analysis.fallback_reasons == ["SyntaxError", "SyntaxError", "ValueError"]
    assert analysis.error.startswith("ValueError: binary content: NUL byte")


async def test_unreadable_file_fails_without_analysers(tmp_path: Path) -> None:
    analysis = await analyse_file(tmp_path / "missing.py")
    assert analysis.failed
    assert analysis.fallback_reasons == []
    assert analysis.error.startswith("FileNotFoundError: ")


def test_tree_selection_skips_caches_and_packages(tmp_path: Path) -> None:
    expected = write_source_tree(tmp_path, modules=2)
    assert find_source_files(tmp_path) == expected
    assert expected == ["legacy/old_print.py", "pkg/__init__.py", "pkg/mod_0.py", "pkg/mod_1.py"]


async def test_broken_symlink_is_selected_and_fails(tmp_path: Path) -> None:
    (tmp_path / "dangling.py").symlink_to(tmp_path / "gone.py")
    assert find_source_files(tmp_path) == ["dangling.py"]
    analysis = await analyse_file(tmp_path / "dangling.py")
    assert analysis.failed
    assert analysis.error.startswith("FileNotFoundError: ")


def test_tree_selection_rejects_file(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    with pytest.raises(NotADirectoryError):
        find_source_files(tmp_path / "a.py")


def test_staging_copies_files_flat(tmp_path: Path) -> None:
    paths = write_source_tree(tmp_path / "tree", modules=2)
    names = stage_files(tmp_path / "tree", paths, tmp_path / "staged")
    assert names == ["0-old_print.py", "1-__init__.py", "2-mod_0.py", "3-mod_1.py"]
    assert sorted(p.name for p in (tmp_path / "staged").iterdir()) == names
    assert (tmp_path / "staged" / "3-mod_1.py").read_text() == GOOD_MODULE


def test_index_reads_staged_names(tmp_path: Path) -> None:
    paths = write_source_tree(tmp_path / "tree", modules=2)
    names = stage_files(tmp_path / "tree", paths, tmp_path / "staged")
    staged = build_index(tmp_path / "staged", paths, names=names).summary()
    assert staged == build_index(tmp_path / "tree", paths).summary()
    assert staged.imports_within_tree == 1


def test_index_counts_definitions_and_imports(tmp_path: Path) -> None:
    paths = write_source_tree(tmp_path, modules=3)
    summary = build_index(tmp_path, paths).summary()
    assert summary.files_indexed == 5
    assert summary.files_skipped == 0
    assert summary.lines == 2 + 3 * GOOD_MODULE_STATS["lines"] + PY2_MODULE_STATS["lines"]
    # Greeter, __init__, greet and main per good module, and legacy in the Python 2 file.
    assert summary.definitions == 3 * 4 + 1
    assert summary.names_defined == 5
    # os and collections per good module, sys in the Python 2 file, and pkg.mod_0 from the package.
    assert summary.imports == 3 * 2 + 1 + 1
    assert summary.modules_imported == 4
    assert summary.imports_within_tree == 1
    assert [(entry.name, entry.count) for entry in summary.most_imported[:2]] == [("collections", 3), ("os", 3)]
    assert summary.most_imported[0].example == "pkg/mod_0.py:4: from collections import OrderedDict"
    assert [(entry.name, entry.count) for entry in summary.most_defined[:1]] == [("Greeter", 3)]


def test_index_resolves_relative_imports(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "util.py").write_text("def helper():\n    pass\n")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "user.py").write_text(
        "from ..util import helper\nfrom . import sibling\nfrom .... import too_far\nimport pkg.util as u, json\n"
    )
    index = build_index(tmp_path, find_source_files(tmp_path))
    assert sorted(index.imports) == ["json", "pkg.sub", "pkg.util"]
    assert index.imports["pkg.util"] == [(2, 1), (2, 4)]  # pkg/sub/user.py is the third file in sorted order
    assert index.summary().imports_within_tree == 3


def test_index_skips_binary_file(tmp_path: Path) -> None:
    (tmp_path / "blob.py").write_bytes(b"\x00\x01\x02")
    (tmp_path / "ok.py").write_text("class A:\n    pass\n")
    summary = build_index(tmp_path, ["blob.py", "ok.py"]).summary()
    assert summary.files_indexed == 1
    assert summary.files_skipped == 1
    assert summary.definitions == 1
