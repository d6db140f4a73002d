"""Layering rules import-linter cannot say: only one agent module imports bcc, and
operator/ is a source root, not a package that would shadow stdlib ``operator``."""

from __future__ import annotations

import ast

from conftest import ROOT

BCC_MODULE = "loading.py"


def imports_of(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_loading_module_imports_bcc() -> None:
    importers = sorted(
        str(p.relative_to(ROOT))
        for root in ("api", "operator", "node-agent", "cli")
        for p in (ROOT / root).rglob("*.py")
        if "bcc" in imports_of(str(p.relative_to(ROOT)))
    )
    assert importers in ([], [f"node-agent/weir_agent/{BCC_MODULE}"])


def test_operator_directory_is_a_source_root_not_a_package() -> None:
    assert not (ROOT / "operator" / "__init__.py").exists()
    assert not (ROOT / "node-agent" / "__init__.py").exists()
    import operator

    assert hasattr(operator, "itemgetter")  # the standard library's, not ours


def test_every_module_opens_with_a_docstring() -> None:
    missing = []
    for root in ("api", "operator", "node-agent", "cli"):
        for path in (ROOT / root).rglob("*.py"):
            if ast.get_docstring(ast.parse(path.read_text())) is None:
                missing.append(str(path.relative_to(ROOT)))
    assert missing == []
