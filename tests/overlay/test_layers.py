"""Imports in ``overlay/`` go one way: identity, h2 and address on the ground; link and
federation above them; peering on top.  Nothing in ``overlay/`` imports the gateway.

Read from the source (every ``import``, including those under ``TYPE_CHECKING`` or inside a
function), so a newcomer can trust the layering the package names promise.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "overlay"

#: Each part of overlay and its floor; a part may import only parts on a lower floor.
FLOOR = {"identity": 0, "h2": 0, "address": 0, "link": 1, "federation": 1, "peering": 2}


def part_of(module: str) -> str | None:
    """The overlay part a dotted module name belongs to (None outside overlay)."""
    pieces = module.split(".")
    if pieces[0] != "overlay" or len(pieces) < 2:
        return None
    return pieces[1]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
    return names


def overlay_modules() -> list[Path]:
    return sorted(p for p in OVERLAY.rglob("*.py") if p.name != "__init__.py")


def test_every_overlay_part_has_a_floor() -> None:
    parts = {p.relative_to(OVERLAY).parts[0].removesuffix(".py") for p in overlay_modules()}
    assert parts == set(FLOOR)


@pytest.mark.parametrize("path", overlay_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_overlay_imports_only_downward(path: Path) -> None:
    own = path.relative_to(OVERLAY).parts[0].removesuffix(".py")
    wrong = []
    for module in sorted(imported_modules(path)):
        if module == "gateway" or module.startswith("gateway."):
            wrong.append(module)
            continue
        part = part_of(module)
        if part is not None and part != own and FLOOR[part] >= FLOOR[own]:
            wrong.append(module)
    assert wrong == [], f"{own} (floor {FLOOR[own]}) imports {wrong}"


#: Below overlay: what each lower package may never import.
BELOW = {"discovery": ("overlay", "gateway"), "foundation": ("discovery", "overlay", "gateway")}


@pytest.mark.parametrize("package", sorted(BELOW))
def test_the_packages_below_overlay_never_import_upward(package: str) -> None:
    wrong = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for module in imported_modules(path)
        if module.split(".")[0] in BELOW[package]
    }
    assert wrong == set()
