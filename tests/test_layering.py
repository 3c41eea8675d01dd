"""The package's import structure: folders import one another without a circle (reader -> sample ->
processor -> model -> text -> normaliser -> score), and no library module imports a command-line module."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "smolrgpt"


def _is_entry_point(path: Path) -> bool:
    # command-line modules sit on top of everything: only cli.py (and other commands) import them
    return path.name == "cli.py" or path.stem.endswith("commands")


def _imports(path: Path) -> set[str]:
    """Every smolrgpt module a file imports, lazy imports inside functions included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("smolrgpt.")}


def _folder(module: str) -> str:
    return module.split(".")[1]


def _library_files():
    return [p for p in PACKAGE.rglob("*.py") if not _is_entry_point(p)]


def folder_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in _library_files():
        source = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for module in _imports(path):
            target = _folder(module)
            if target != source:
                graph.setdefault(source, set()).add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [])):
            return cycle[cycle.index(cycle[-1]):]
    return None


def test_find_cycle_finds_a_circle_and_only_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}}) is None


def test_no_import_circle_between_folders():
    assert find_cycle(folder_graph()) is None


def module_graph() -> dict[str, set[str]]:
    """File-level edges among smolrgpt's own modules (entry points included)."""
    def name(path: Path) -> str:
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    files = {name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {x for x in _imports(p) if x in files and x != m} for m, p in files.items()}


def test_no_import_circle_between_files():
    assert find_cycle(module_graph()) is None


def test_no_library_module_imports_a_command_line_module():
    offenders = sorted(f"{p.relative_to(PACKAGE)} imports {m}" for p in _library_files() for m in _imports(p)
                       if m.rsplit(".", 1)[-1].endswith("commands") and (PACKAGE.parent / (m.replace(".", "/") + ".py")).exists())
    assert offenders == []
