"""The import structure the README describes, checked on the code itself.

The apps form a strict stack, lowest first: `core` (plumbing), `llm_providers`, `battles`,
`leaderboard`, `arena` (the site shell). A module imports only from its own app or the apps
below it, never from `config` (the project, which imports them), and never from inside a
function to dodge a loop. Tests and migrations are left out: they may reach anywhere.
"""

import ast
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)
LAYERS = ["core", "llm_providers", "battles", "leaderboard", "arena"]
PROJECT = {*LAYERS, "config"}


def _app_modules() -> dict[str, Path]:
    modules = {}
    for app in LAYERS:
        for path in sorted((ROOT / app).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "tests" in parts or "migrations" in parts or "testing" in parts:
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _imports(path: Path, *, module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import of a project module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    target = f"{base}.{child.module}" if child.module else base
                else:
                    target = child.module or ""
                # `from battles import services` imports the module battles.services.
                names = [target] + [f"{target}.{alias.name}" for alias in child.names]
            for name in names:
                if name.split(".")[0] in PROJECT:
                    found.append((name, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an import name refers to (the longest known prefix)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def test_no_app_imports_an_app_above_it_or_the_project():
    upward = []
    for module, path in _app_modules().items():
        layer = LAYERS.index(module.split(".")[0])
        for name, line, _ in _imports(path, module=module):
            top = name.split(".")[0]
            if top == "config" or LAYERS.index(top) > layer:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not sorted(set(upward)), "imports that run back up the stack:\n" + "\n".join(
        sorted(set(upward))
    )


def test_no_project_import_hides_inside_a_function():
    hidden = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for module, path in _app_modules().items()
        for name, line, in_function in _imports(path, module=module)
        # An AppConfig connects its signals in ready(), as Django documents: not a dodge.
        if in_function and path.name != "apps.py"
    ]
    assert not sorted(set(hidden)), "function-level imports of project modules:\n" + "\n".join(
        sorted(set(hidden))
    )


def test_modules_import_each_other_in_no_circle():
    modules = _app_modules()
    graph = {
        module: {
            target
            for name, _, _ in _imports(path, module=module)
            if (target := _resolve(name, modules)) and target != module
        }
        for module, path in modules.items()
    }
    # Every path a package's __init__ pulls in is not a circle of its own making: only edges
    # between distinct modules count.
    circles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_walk_sees_a_known_downward_import():
    """The checks above read real imports: battles.services imports core.visitors."""
    modules = _app_modules()
    names = {
        name for name, _, _ in _imports(modules["battles.services"], module="battles.services")
    }
    assert "core.visitors" in names
    assert LAYERS.index("core") < LAYERS.index("battles")
