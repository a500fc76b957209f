"""The import rule of ARCHITECTURE.md, held against the code: no cycles, and no module imports a layer above its own.

The layers are read from ARCHITECTURE.md's table, so the map and the code cannot drift apart: a new module must be
placed in a layer there before this test passes. Imports are read with ``ast`` from every file of the package,
inside functions too (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "transfer_cache"


def _layers() -> dict[str, int]:
    """ARCHITECTURE.md, section "Import rule": rows ``| N | `module`, `module` | ... |`` -> {module: N}."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("## Import rule", 1)[1].split("\n## ", 1)[0]
    layers: dict[str, int] = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if match:
            for name in re.findall(r"`([A-Za-z_][\w.]*)`", match.group(2)):
                layers[name] = int(match.group(1))
    assert layers, "ARCHITECTURE.md has no layer table under '## Import rule'"
    return layers


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "__init__"


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports (``from . import x`` counts as module x when x is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".") if package and package != "__init__" else []
                base_parts = base_parts[: len(base_parts) - (node.level - 1)] if node.level > 1 else base_parts
                base = ".".join(base_parts + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("transfer_cache"):
                base = node.module.removeprefix("transfer_cache").lstrip(".")
            else:
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}" if base else alias.name
                found.add(candidate if candidate in modules else (base or "__init__"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("transfer_cache."):
                    found.add(alias.name.removeprefix("transfer_cache."))
    found.discard(name)
    return {m for m in found if m in modules}


def _unit(module: str) -> str:
    return module.split(".")[0]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_module_has_a_layer(graph):
    layers = _layers()
    missing = sorted({_unit(m) for m in graph} - set(layers))
    assert not missing, f"place these modules in ARCHITECTURE.md's import rule table: {missing}"
    stale = sorted(set(layers) - {_unit(m) for m in graph})
    assert not stale, f"ARCHITECTURE.md names modules that do not exist: {stale}"


def _upward_imports(graph: dict[str, set[str]], layers: dict[str, int]) -> list[str]:
    return sorted(
        f"{importer} (layer {layers[_unit(importer)]}) imports {imported} (layer {layers[_unit(imported)]})"
        for importer, targets in graph.items()
        for imported in targets
        if _unit(imported) != _unit(importer) and layers[_unit(imported)] > layers[_unit(importer)]
    )


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_module_imports_a_layer_above_its_own(graph):
    upward = _upward_imports(graph, _layers())
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycles(graph):
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_planted_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """The rule can fail: a fake package with a cycle and an upward import is caught by the same functions."""
    fake = tmp_path / "transfer_cache"
    (fake / "sub").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "low.py").write_text("from .high import thing\n")
    (fake / "high.py").write_text("def f():\n    from . import low\n")
    (fake / "sub" / "__init__.py").write_text("from .part import x\n")
    (fake / "sub" / "part.py").write_text("from .. import low\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    modules = _modules()
    assert sorted(modules) == ["__init__", "high", "low", "sub", "sub.part"]
    fake_graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert fake_graph["low"] == {"high"} and fake_graph["high"] == {"low"}
    assert fake_graph["sub"] == {"sub.part"} and fake_graph["sub.part"] == {"low"}
    assert _cycles(fake_graph) == [["high", "low", "high"]]
    layers = {"__init__": 0, "low": 0, "sub": 0, "high": 1}
    assert _upward_imports(fake_graph, layers) == ["low (layer 0) imports high (layer 1)"]


def test_no_module_reaches_into_another_modules_private_names():
    """Private helpers live in ``_``-prefixed modules; a ``_name`` of a public module stays inside that module."""
    modules = _modules()
    offences = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or not node.level or not node.module:
                continue
            target = ".".join(([] if node.level > 1 or "." not in name else name.split(".")[:-1]) + [node.module])
            private_module = any(part.startswith("_") for part in node.module.split("."))
            if _unit(target) == _unit(name) or private_module:
                continue
            offences += [f"{name} imports {alias.name} from {node.module}" for alias in node.names
                         if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not offences, "\n".join(offences)


# --------------------------------------------------------------------------- the layer table is the import depth


def _unit_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    units: dict[str, set[str]] = {}
    for module, targets in graph.items():
        units.setdefault(_unit(module), set()).update(_unit(t) for t in targets if _unit(t) != _unit(module))
    return units


def _depths(units: dict[str, set[str]]) -> dict[str, int]:
    """0 for a module that imports no other module of the package, else one more than the deepest it imports."""
    depth: dict[str, int] = {}

    def of(unit: str) -> int:
        if unit not in depth:
            depth[unit] = 1 + max((of(t) for t in units[unit]), default=-1)
        return depth[unit]

    for unit in units:
        of(unit)
    return depth


def test_the_layer_table_is_the_import_depth(graph):
    """Each module's layer in ARCHITECTURE.md is its real depth in the import graph, so the table cannot claim a
    layering the code does not have (the message prints the table's rows as the code makes them)."""
    depths = _depths(_unit_graph(graph))
    layers = _layers()
    wrong = sorted(f"{unit}: table {layers.get(unit)}, imports make {depth}" for unit, depth in depths.items()
                   if layers.get(unit) != depth)
    rows = {}
    for unit, depth in depths.items():
        rows.setdefault(depth, []).append(unit)
    table = "\n".join(f"| {d} | {', '.join(f'`{u}`' for u in sorted(rows[d]))} |" for d in sorted(rows))
    assert not wrong, "\n".join(wrong) + "\n\nthe imports make this table:\n" + table


def test_the_depth_is_computed_from_the_imports():
    units = {"a": set(), "b": {"a"}, "c": {"a", "b"}, "d": {"a"}}
    assert _depths(units) == {"a": 0, "b": 1, "c": 2, "d": 1}


# --------------------------------------------------------------------------- "only X does Y", held against the code

_REGISTRIES = {"backbones", "runtimes", "sources", "classifiers", "augment", "datasets", "extract_options"}
_CACHE_FORMAT = {"cache", "cache_writer", "cache_tables"}


def _reachable(units: dict[str, set[str]], start: set[str]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        unit = todo.pop()
        for target in units[unit] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_the_cache_format_stands_on_no_registry(graph):
    """The storage format knows tables, columns, attributes and the typed FeatureConfig record, nothing of the
    model, runtime or source registries (directly or through anything it imports)."""
    reached = _reachable(_unit_graph(graph), _CACHE_FORMAT) & _REGISTRIES
    assert not reached, f"the cache format reaches the registries {sorted(reached)}"


def _string_parts(path: Path):
    """Every string constant of a module, and the constant text of every f-string with its placeholders as {}."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.JoinedStr):
            yield "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


_BUILDS_A_SHARD_NAME = re.compile(r"shard\{\}-of-\{\}|shard\(\?P|shard\\d")


def test_shard_file_names_are_built_and_parsed_only_in_shards():
    offenders = sorted(
        f"{name}: {text!r}" for name, path in _modules().items() if name != "shards"
        for text in _string_parts(path) if _BUILDS_A_SHARD_NAME.search(text)
    )
    assert not offenders, "\n".join(offenders)
    assert any(_BUILDS_A_SHARD_NAME.search(t) for t in _string_parts(PACKAGE / "shards.py"))  # the test can see one


# --------------------------------------------------------------------------- run folders only through runs

# a run folder's files and the runs index (and the copies of a damaged index kept aside): only runs names them
RUN_FILES = ("config.json", "metrics.json", "predictions.csv", "history.json", "index.csv")
KEPT_INDEX = "index.csv.old-"
MODEL_FOLDER = "model"  # spelled as a path part: folder / "model"
# predictions.csv's columns; a list or tuple of several of them is its header, spelled again
PREDICTION_COLUMNS = {"row", "cache", "path", "true_label", "true_name", "pred_label", "pred_name", "confidence"}
# spellings that are not of a run folder, or not yet through runs, each with its reason
ALLOWED = {
    ("runtimes._openvino_convert", "config.json"): "the converted model's own description, not a run's",
}


def _run_folder_spellings(name: str, source: str) -> list[str]:
    """Where the module ``name`` spells a run folder's file (a string that is the whole name, or a path part
    ``/ "model"``) or predictions.csv's header (a list or tuple holding three or more of its columns)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in RUN_FILES or node.value.startswith(KEPT_INDEX):
                found.append((node.lineno, node.value))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant):
            if node.right.value == MODEL_FOLDER:
                found.append((node.lineno, f"/ {MODEL_FOLDER!r}"))
        elif isinstance(node, (ast.List, ast.Tuple)):
            columns = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            if len(columns & PREDICTION_COLUMNS) >= 3 and columns & (PREDICTION_COLUMNS - {"row", "cache", "path"}):
                found.append((node.lineno, "the predictions.csv header"))
    return [f"{name}:{line} spells {what}" for line, what in sorted(found) if (name, what) not in ALLOWED]


def test_run_folders_are_read_and_written_only_through_runs():
    """ARCHITECTURE.md: "run folders only through runs". No module but runs names a run folder's files or spells
    predictions.csv's columns: every other reads and writes them by calling runs."""
    offences = []
    for name, path in _modules().items():
        if _unit(name) != "runs":
            offences += _run_folder_spellings(name, path.read_text(encoding="utf-8"))
    assert not offences, "read and write run folders through runs:\n" + "\n".join(offences)


def test_the_run_folder_check_sees_a_planted_spelling():
    planted = (
        "def f(run_dir, names):\n"
        "    config = run_dir / 'config.json'\n"
        "    model = run_dir / 'model'\n"
        "    kept = run_dir.glob('index.csv.old-*')\n"
        "    header = ['row', 'cache', 'path', 'true_label', 'pred_label']\n"
        "    return f'{run_dir}/config.json names a head', names['confidence']\n"  # a message, a column looked up
    )
    assert _run_folder_spellings("export", planted) == [
        "export:2 spells config.json", "export:3 spells / 'model'", "export:4 spells index.csv.old-*",
        "export:5 spells the predictions.csv header",
    ]
    allowed = "path = folder / 'config.json'\n"  # the converted model's own file: allowed, with its reason
    assert _run_folder_spellings("runtimes._openvino_convert", allowed) == []
