"""The task package imports one way: settings is a leaf, no module imports itself back.

Every ``tasks.*`` import counts, also the ones inside functions, and ``from tasks import
app`` leads to tasks.application (tasks/__init__.py makes ``tasks.app`` there).
``python tests/test_layers.py`` prints the graph, one module and what it imports a line.

Celery's own references by name are not imports and are left out: the app's ``include``
(the task modules, imported when a worker starts or the checker asks for the task
names, after the app exists) and ``config_from_object("tasks.celeryconfig")``.
"""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "files" / "tasks"
# Names of tasks/__init__.py that are not modules: where they come from.
PACKAGE_ATTRIBUTES = {"app": "application"}


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == "tasks":
            found |= {f"tasks.{PACKAGE_ATTRIBUTES.get(alias.name, alias.name)}"
                      for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {name.removeprefix("tasks.") for name in found if name.startswith("tasks.")}


def import_graph() -> dict[str, set[str]]:
    return {("__init__" if path.stem == "__init__" else path.stem): imports_of(path)
            for path in sorted(PACKAGE.glob("*.py"))}


def test_every_import_names_a_module_of_the_package():
    graph = import_graph()
    assert {name for imported in graph.values() for name in imported} <= set(graph)


def test_the_package_has_no_import_cycle():
    try:
        tuple(TopologicalSorter(import_graph()).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_settings_and_errors_are_leaves():
    graph = import_graph()
    assert graph["errors"] == set()
    assert graph["settings"] == set()


def test_task_modules_import_no_other_task_module():
    graph = import_graph()
    task_modules = {"ml_tasks", "data_tasks", "simple_tasks"}
    for module in task_modules:
        assert not graph[module] & task_modules, module


if __name__ == "__main__":
    graph = import_graph()
    order = TopologicalSorter(graph).static_order()
    for module in order:
        print(f"{module:13} -> {', '.join(sorted(graph[module])) or '(nothing of tasks)'}")
