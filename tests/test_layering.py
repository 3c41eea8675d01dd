"""The package's import structure, read from the source (nothing is imported), with no exclusions:
(a) no import circle between units, a unit being a folder of src/smolrgpt or a top-level module;
(b) no import circle between files; (c) only smolrgpt/cli imports smolrgpt.cli; (d) every import goes to
the same or a lower layer of LAYERS. Lazy imports inside functions count; imports by a name in a string
(importlib: the package root's lazy exports, cli's COMMANDS table) are not seen. A failing check's message
lists the offending files and imports; the synthetic graphs below show each check failing."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "smolrgpt"
ROOT = "__init__"  # the unit of src/smolrgpt/__init__.py, and of a name imported from the package itself

# Lowest first; a unit may import only its own layer and those before it.
# The data path reader -> sample -> processor -> model -> text -> normaliser -> score is this order:
# data (readers, Sample) < processing < modeling < decoding (text) < evaluation (normaliser, scorers).
# engine sits above evaluation rather than beside decoding because it is where that path is assembled: it
# runs the model, decodes the text and hands it to the normaliser (its Answer carries the normalized
# answer), while evaluation's predict is given an engine and never imports one.
LAYERS = [
    ROOT,  # runs before any smolrgpt module; its re-exports load by name on first use, not at import
    "errors",
    "atomic",  # atomic writes, on errors
    "data",  # readers and the one Sample type
    "processing",  # the processor: images, regions, prompts, cache, data check
    "visualize",  # draws regions with processing's decoders; below evaluation, whose gallery uses it
    "synth",  # the synthetic warehouse; writes files, imports only errors and atomic
    "modeling",
    "decoding",
    "evaluation",
    "engine",
    "training",  # trains modeling's model on processing's batches, scores with evaluation
    "serving",  # the HTTP service around engine (and synth's bundled examples)
    "demo",  # the time-budgeted job: synth, training, engine, evaluation together
    "cli",  # the command line, on top of everything
]
CLI = "cli"


# --------------------------------------------------------------------------- reading the source
def _imports(path: Path, module: str) -> set[str]:
    """Every smolrgpt name a file imports (`from a import b` gives both a and a.b), lazy imports included;
    relative imports are resolved against `module`, the file's own dotted name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[:len(module.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join(package + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m == "smolrgpt" or m.startswith("smolrgpt.")}


def _module_name(relative: str) -> str:
    parts = ["smolrgpt", *Path(relative).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_imports(package: Path = PACKAGE) -> dict[str, set[str]]:
    """File relative to the package ("data/track3.py") -> the smolrgpt names it imports."""
    files = {p.relative_to(package).as_posix(): p for p in sorted(package.rglob("*.py"))}
    return {rel: _imports(p, _module_name(rel)) for rel, p in files.items()}


def unit_of_file(relative: str) -> str:
    return Path(relative).parts[0].removesuffix(".py")


def unit_of_module(module: str, units: set[str]) -> str:
    parts = module.split(".")
    # `from smolrgpt import __version__` names no unit: it is the package root's
    return parts[1] if len(parts) > 1 and parts[1] in units else ROOT


def _edges(imports: dict[str, set[str]]):
    """(importing unit, imported unit, file, module) for every import between two different units."""
    units = {unit_of_file(f) for f in imports}
    for file, modules in sorted(imports.items()):
        source = unit_of_file(file)
        for module in sorted(modules):
            target = unit_of_module(module, units)
            if target != source:
                yield source, target, file, module


# --------------------------------------------------------------------------- the checks
# Each raises AssertionError with the offenders as its message (not `assert`, whose message pytest rewrites),
# so a failing test prints them as they are and the synthetic tests can compare them exactly.
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


def check_no_unit_circle(imports: dict[str, set[str]]) -> None:
    graph: dict[str, set[str]] = {}
    evidence: dict[tuple[str, str], list[str]] = {}
    for source, target, file, module in _edges(imports):
        graph.setdefault(source, set()).add(target)
        evidence.setdefault((source, target), []).append(f"  {file} imports {module}")
    cycle = find_cycle(graph)
    lines = [line for a, b in zip(cycle or [], (cycle or [])[1:]) for line in evidence[a, b]]
    if cycle:
        raise AssertionError(f"import circle between units: {' -> '.join(cycle)}\n" + "\n".join(lines))


def check_no_file_circle(imports: dict[str, set[str]]) -> None:
    names = {_module_name(f) for f in imports}
    graph = {_module_name(f): {m for m in modules if m in names and m != _module_name(f)}
             for f, modules in imports.items()}
    cycle = find_cycle(graph)
    if cycle:
        raise AssertionError(f"import circle between files: {' -> '.join(cycle)}")


def check_only_cli_imports_cli(imports: dict[str, set[str]]) -> None:
    offenders = [f"  {file} imports {module}" for source, target, file, module in _edges(imports) if target == CLI]
    if offenders:
        raise AssertionError(f"outside smolrgpt/{CLI}, these import the command line:\n" + "\n".join(offenders))


def check_layers(imports: dict[str, set[str]], layers: list[str]) -> None:
    rank = {unit: i for i, unit in enumerate(layers)}
    units = {unit_of_file(f) for f in imports}
    offenders = [f"  unit {u!r} is not in the layer list" for u in sorted(units - set(rank))]
    offenders += [f"  {file} imports {module}: {source} (layer {rank[source]}) is below {target} "
                  f"(layer {rank[target]})" for source, target, file, module in _edges(imports)
                  if source in rank and target in rank and rank[target] > rank[source]]
    if offenders:
        raise AssertionError("imports that go up the layers:\n" + "\n".join(offenders))


# --------------------------------------------------------------------------- the package
@pytest.fixture(scope="module")
def imports():
    return source_imports()


def test_the_source_is_read(imports):
    # a reader that found nothing would pass every check below
    assert "smolrgpt.data.sample" in imports["processing/processor.py"]
    assert "smolrgpt.cli" in imports["cli/__main__.py"]
    assert {unit_of_file(f) for f in imports} == set(LAYERS)


def test_no_import_circle_between_folders(imports):
    check_no_unit_circle(imports)


def test_no_import_circle_between_files(imports):
    check_no_file_circle(imports)


def test_nothing_outside_cli_imports_cli(imports):
    check_only_cli_imports_cli(imports)


def test_imports_go_down_the_layers(imports):
    check_layers(imports, LAYERS)


# --------------------------------------------------------------------------- each check can fail
SYNTHETIC = {
    "__init__.py": set(),
    "data/sample.py": {"smolrgpt.data.reader"},
    "data/reader.py": {"smolrgpt.data.sample", "smolrgpt.modeling.model"},
    "modeling/model.py": {"smolrgpt.data.sample", "smolrgpt.__version__"},
    "engine.py": {"smolrgpt.modeling.model", "smolrgpt.cli.ask"},
    "cli/ask.py": {"smolrgpt.modeling"},
}


def test_find_cycle_finds_a_circle_and_only_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}}) is None


def test_each_check_fails_on_a_graph_that_breaks_it():
    with pytest.raises(AssertionError) as unit_circle:
        check_no_unit_circle(SYNTHETIC)
    assert str(unit_circle.value).splitlines() == [
        "import circle between units: modeling -> data -> modeling",
        "  modeling/model.py imports smolrgpt.data.sample",
        "  data/reader.py imports smolrgpt.modeling.model"]
    with pytest.raises(AssertionError) as file_circle:
        check_no_file_circle(SYNTHETIC)
    assert str(file_circle.value) == (
        "import circle between files: smolrgpt.data.reader -> smolrgpt.data.sample -> smolrgpt.data.reader")
    with pytest.raises(AssertionError) as cli:
        check_only_cli_imports_cli(SYNTHETIC)
    assert str(cli.value).splitlines() == ["outside smolrgpt/cli, these import the command line:",
                                               "  engine.py imports smolrgpt.cli.ask"]
    with pytest.raises(AssertionError) as layers:
        check_layers(SYNTHETIC, [ROOT, "data", "modeling", "engine"])
    assert str(layers.value).splitlines() == [
        "imports that go up the layers:",
        "  unit 'cli' is not in the layer list",
        "  data/reader.py imports smolrgpt.modeling.model: data (layer 1) is below modeling (layer 2)"]


def test_the_checks_pass_a_graph_that_keeps_the_rules():
    good = {"__init__.py": set(), "data/sample.py": set(), "data/reader.py": {"smolrgpt.data.sample"},
            "modeling/model.py": {"smolrgpt.data.sample", "smolrgpt.__version__"},
            "cli/ask.py": {"smolrgpt.modeling.model", "smolrgpt.cli"}, "cli/__init__.py": set()}
    for check in (check_no_unit_circle, check_no_file_circle, check_only_cli_imports_cli):
        check(good)
    check_layers(good, [ROOT, "data", "modeling", "cli"])


def test_relative_imports_are_resolved(tmp_path):
    (tmp_path / "reader.py").write_text("from . import sample\nfrom ..processing.images import open_image\n")
    (tmp_path / "__init__.py").write_text("from .sample import Sample\n")
    assert _imports(tmp_path / "reader.py", "smolrgpt.data.reader") == {
        "smolrgpt.data", "smolrgpt.data.sample", "smolrgpt.processing.images", "smolrgpt.processing.images.open_image"}
    assert _imports(tmp_path / "__init__.py", "smolrgpt.data") == {"smolrgpt.data.sample",
                                                                    "smolrgpt.data.sample.Sample"}
