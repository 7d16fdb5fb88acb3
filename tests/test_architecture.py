"""The layers of docs/architecture.md hold: the core imports no plugin, command line, emulator or
testing code, and built-in plugins import no command line, emulator or testing code.

Every ``import``/``from ... import`` in a module counts, at any depth and under TYPE_CHECKING
too: a layer that needs another only "lazily" still depends on it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OUTER = ("salesmgr.plugins", "salesmgr.cli", "salesmgr.emulator", "salesmgr.testing",
         "salesmgr.web")
RULES = {
    "framework": OUTER,
    "plugins": ("salesmgr.cli", "salesmgr.emulator", "salesmgr.testing", "salesmgr.web"),
    # The web front end is a command like a third party's: nothing else imports it.
    "cli": ("salesmgr.web",),
    "emulator": ("salesmgr.web",),
    "testing": ("salesmgr.web",),
}


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` names in an import statement."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def forbidden_imports(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in sorted(imported_modules(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


@pytest.mark.parametrize("folder", sorted(RULES))
def test_a_layer_never_imports_the_layers_outside_it(folder: str) -> None:
    assert forbidden_imports(folder, RULES[folder]) == []


def test_the_rule_sees_an_import_hidden_in_a_function(tmp_path: Path) -> None:
    module = tmp_path / "sneaky.py"
    module.write_text("def later():\n    from salesmgr.cli.group import cli\n    return cli\n")
    assert imported_modules(module) >= {"salesmgr.cli.group"}

