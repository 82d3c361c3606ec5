"""The top-level packages import one way: every import (lazy ones inside functions too) points down the layers.

    common                          leaf: config loading, atomic writes, the worker pool
    text, codec                     the text front end; the audio codec
    data, tts_lm                    corpus and tokens; the TTS LM
    evaluation                      measures the codec and the LM
    alignment                       preference alignment, the top training stage
    apps                            the demo

A package may import only packages of lower layers, and only those its `__init__.py` docstring names in the
first sentence of its "Imports:" paragraph, so the docstrings cannot drift from the code. The imports are read
with `ast` (nothing is imported), so the test costs milliseconds.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = [["common"], ["text", "codec"], ["data", "tts_lm"], ["evaluation"], ["alignment"], ["apps"]]
LAYER = {package: i for i, names in enumerate(LAYERS) for package in names}


def imported_packages(source: str) -> set[str]:
    """Top-level names of every absolute import in `source`, at any depth (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def package_imports(package: str, root: Path = ROOT) -> dict[str, set[str]]:
    """{other project package: files of `package` that import it}."""
    found: dict[str, set[str]] = {}
    for path in sorted((root / package).rglob("*.py")):
        for name in imported_packages(path.read_text(encoding="utf-8")) & LAYER.keys() - {package}:
            found.setdefault(name, set()).add(str(path.relative_to(root)))
    return found


def declared_imports(package: str, root: Path = ROOT) -> set[str]:
    """The packages named in the first sentence of the docstring's "Imports:" paragraph (bracketed asides left out)."""
    doc = ast.get_docstring(ast.parse((root / package / "__init__.py").read_text(encoding="utf-8"))) or ""
    match = re.search(r"^Imports:(.*?)(?:\n\n|\Z)", doc, re.MULTILINE | re.DOTALL)
    assert match, f"{package}/__init__.py: the docstring has no 'Imports:' paragraph saying what it may import"
    sentence = re.split(r"[.;](?:\s|$)", re.sub(r"\([^)]*\)", "", match.group(1)))[0]
    return set(re.findall(r"\w+", sentence)) & LAYER.keys()


def layering_errors(package: str, root: Path = ROOT) -> list[str]:
    """What breaks the layering in `package`: declared imports not below it, imports not declared."""
    declared = declared_imports(package, root)
    errors = [f"{package} declares {d}, which is not in a lower layer" for d in declared if LAYER[d] >= LAYER[package]]
    for name, files in sorted(package_imports(package, root).items()):
        if name not in declared:
            errors.append(
                f"{package} imports {name} (in {', '.join(sorted(files))}), which its docstring does not allow"
            )
    return errors


def test_every_package_has_a_layer() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == LAYER.keys(), "a top-level package is missing from LAYERS (or LAYERS names a removed one)"


@pytest.mark.parametrize("package", list(LAYER))
def test_imports_point_down_and_match_the_docstring(package: str) -> None:
    assert layering_errors(package) == []


def test_no_package_level_cycle() -> None:
    graph = {package: set(package_imports(package)) for package in LAYER}
    done: set[str] = set()

    def visit(package: str, path: tuple[str, ...]) -> None:
        assert package not in path, "import cycle: " + " -> ".join((*path, package))
        if package not in done:
            for name in graph[package]:
                visit(name, (*path, package))
            done.add(package)

    for package in graph:
        visit(package, ())


def test_a_wrong_way_import_is_caught(tmp_path: Path) -> None:
    """tts_lm importing alignment (lazily, inside a function) or declaring it are both reported."""
    (tmp_path / "tts_lm").mkdir()
    (tmp_path / "tts_lm" / "__init__.py").write_text('"""LM.\n\nImports: common, text and codec.\n"""\n')
    (tmp_path / "tts_lm" / "model.py").write_text(
        "from codec import NanoCodec\n\n\ndef f():\n    import alignment.pairs\n"
    )
    assert package_imports("tts_lm", tmp_path) == {"codec": {"tts_lm/model.py"}, "alignment": {"tts_lm/model.py"}}
    assert layering_errors("tts_lm", tmp_path) == [
        "tts_lm imports alignment (in tts_lm/model.py), which its docstring does not allow"
    ]
    (tmp_path / "tts_lm" / "__init__.py").write_text('"""LM.\n\nImports: codec and alignment.\n"""\n')
    assert layering_errors("tts_lm", tmp_path) == ["tts_lm declares alignment, which is not in a lower layer"]
