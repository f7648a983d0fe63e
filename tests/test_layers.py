"""The architecture as rules the code keeps (docs/architecture.md): checked on the source, no server."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "orthancfs"
FRONTENDS = ("fuse", "webdav")
# What a frontend may import of the package besides itself: the tree, the error vocabulary,
# settings' types and helpers.
FRONTEND_MAY_IMPORT = {"tree", "errors", "settings"}
ROUTES = ("/patients", "/studies", "/series", "/instances", "/tools/", "/system", "/statistics", "/changes")


def modules(*parts: str) -> list[Path]:
    return sorted((PACKAGE.joinpath(*parts)).rglob("*.py"))


def package_imports(path: Path) -> set[str]:
    """The first component of every orthancfs module `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    inside = path.relative_to(PACKAGE).parts[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(inside[: len(inside) - node.level + 1])
            target = [*base, *(node.module.split(".") if node.module else [])]
            found.add(target[0] if target else (node.names[0].name if node.names else ""))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("orthancfs."):
            found.add(node.module.split(".")[1])
    return found


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_frontends_reach_the_model_only_through_the_tree(frontend: str) -> None:
    for path in modules(frontend):
        beyond = package_imports(path) - FRONTEND_MAY_IMPORT - {frontend}
        assert not beyond, f"{path.relative_to(PACKAGE)} imports {sorted(beyond)}"


def test_only_the_client_builds_orthanc_urls() -> None:
    for path in modules():
        if path.relative_to(PACKAGE).parts[0] == "orthanc":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                assert not node.value.startswith(ROUTES), f"{path.relative_to(PACKAGE)}: {node.value!r}"


def test_the_model_is_synchronous() -> None:
    for path in modules("tree"):
        tree = ast.parse(path.read_text())
        assert not any(isinstance(node, ast.AsyncFunctionDef | ast.Await) for node in ast.walk(tree)), path.name


def test_nothing_imports_upward_into_the_frontends() -> None:
    for path in [*modules("tree"), *modules("orthanc"), PACKAGE / "content.py", PACKAGE / "cache.py"]:
        upward = package_imports(path) & {*FRONTENDS, "mount", "cli", "compose"}
        assert not upward, f"{path.relative_to(PACKAGE)} imports {sorted(upward)}"


def test_the_model_holds_no_event_loop_code() -> None:
    """Loop fast paths belong to the frontend that runs the loop: the tree neither imports trio nor
    the client's loop sender (the composition root hands that to the FUSE frontend)."""
    for path in modules("tree"):
        tree = ast.parse(path.read_text())
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
                 for alias in node.names}
        modules_named = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not ({"trio", "LoopUploader"} & (names | modules_named)), path.name
