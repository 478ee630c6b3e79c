"""The import graph of src/sagan, read from the source (AST): no cycle, and the library never
imports the commands layer or the command line (docs/architecture.md, "Layers")."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
TOP = ("sagan.commands", "sagan.cli", "sagan.__main__")  # the layer above the library


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each sagan module -> the sagan modules it imports anywhere in its source (module level or
    inside functions); `from sagan.x import y` counts sagan.x.y when that is a module."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first == last), or None."""
    state: dict[str, str] = {}  # "open" while on the DFS stack, "done" after

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target, stack + [target])):
                return cycle
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [node])):
            return cycle
    return None


def is_top(module: str) -> bool:
    return any(module == top or module.startswith(top + ".") for top in TOP)


def test_the_import_graph_has_no_cycle():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_the_library_never_imports_the_commands_or_the_command_line():
    upward = {(m, t) for m, targets in import_graph().items() if not is_top(m) for t in targets if is_top(t)}
    assert not upward


def test_the_checks_find_what_they_look_for():
    """The two checks on planted graphs: a circle through three modules, and a library module
    importing a command."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert is_top("sagan.commands.train") and is_top("sagan.cli") and not is_top("sagan.commands_x")
