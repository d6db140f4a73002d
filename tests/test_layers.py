"""Layering rules import-linter cannot say: only one agent module imports bcc, and
operator/ is a source root, not a package that would shadow stdlib ``operator``."""

from __future__ import annotations

import ast

from conftest import ROOT

BCC_MODULE = "kernel/compiler.py"


def imports_of(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_compiler_module_imports_bcc() -> None:
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


def test_every_package_is_in_the_build_configuration() -> None:
    # pyproject.toml lists the packages (bpf/ ships as weir_agent.bpf): a new subpackage
    # that is not listed would be missing from the wheel and the image.
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = config["package-dir"]
    found = {"weir_agent.bpf"}
    for top, where in dirs.items():
        if "." in top:
            continue
        for init in (ROOT / where).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / where).parts
            found.add(".".join((top, *parts)))
    assert sorted(config["packages"]) == sorted(found)
    assert dirs["weir_agent.bpf"] == "bpf" and (ROOT / "bpf" / "hook.bpf.c").is_file()
