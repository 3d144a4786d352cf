"""The package's shape (ARCHITECTURE.md): imports flow one way, config -> layers -> model -> (generate | hf |
train); no import cycles; small files; torch never imported by zoo. Read from the source with `ast`, lazy
imports inside functions included."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ZOO = Path(__file__).resolve().parent.parent / "zoo"
MAX_LINES = 350

# Each module's tier; a module may import only from its own tier or lower ones (and not in a cycle).
TIERS = [
    ("zoo.fields", "zoo.applicability", "zoo.config_checks"),  # dataclass machinery; when knobs apply; checks
    ("zoo.config", "zoo.recipe", "zoo.semantics"),  # ModelConfig, TrainConfig
    ("zoo.presets",),  # configs/*.yaml -> the two above
    ("zoo.layers",),  # one idea per module
    ("zoo.model", "zoo.sharding", "zoo.flops"),
    ("zoo.generate", "zoo.prompts", "zoo.hf", "zoo.analysis", "zoo.block_diagram"),  # what uses a model
    ("zoo.train",),  # the trainer, over all of the above
    # applications of the trainer, HF bridge; the experiments' sizes per scale and plots
    ("zoo.export", "zoo.experiments", "zoo.scales", "zoo.experiment_plots", "zoo.stability", "zoo.harness"),
    ("zoo.commands",),  # the console scripts, over everything
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ZOO.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ZOO.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """The zoo modules `name` imports (`from zoo import presets` counts as zoo.presets)."""
    out = set()
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from . import x` in package p is p.x
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            submodules = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES}
            out |= submodules if len(submodules) == len(node.names) else submodules | {base}
    return {m for m in out if m in MODULES and m != name}


GRAPH = {name: _imports(name) for name in MODULES}


def _tier(name: str) -> int | None:
    for rank, prefixes in enumerate(TIERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return rank
    return None


def test_every_module_has_a_tier():
    assert [m for m in MODULES if m != "zoo" and _tier(m) is None] == []


@pytest.mark.parametrize("name", [m for m in MODULES if m != "zoo"])
def test_imports_flow_one_way(name):
    back = sorted(m for m in GRAPH[name] if m != "zoo" and _tier(m) > _tier(name))
    assert not back, f"{name} (tier {_tier(name)}) imports {back} from a higher tier"


def test_no_import_cycles():
    done, path = set(), []

    def visit(node):
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(node) :] + [node]))
        if node in done:
            return
        path.append(node)
        for dep in GRAPH[node] - {"zoo"}:
            visit(dep)
        path.pop()
        done.add(node)

    for name in GRAPH:
        visit(name)


def test_the_loop_never_imports_the_command_line():
    """Only the commands (zoo.commands, the console scripts) import the trainer's command line or the
    applications."""
    assert [m for m, deps in GRAPH.items() if "zoo.train.cli" in deps] == ["zoo.commands"]
    apps = {"zoo.export", "zoo.experiments", "zoo.stability", "zoo.harness"}
    assert [m for m, deps in GRAPH.items() if apps & deps and m not in apps | {"zoo.commands"}] == []


@pytest.mark.parametrize("name", list(MODULES))
def test_files_are_small_and_torch_free(name):
    source = MODULES[name].read_text()
    assert len(source.splitlines()) <= MAX_LINES, f"{MODULES[name]} has {len(source.splitlines())} lines"
    imported = {
        a.name.split(".")[0] for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import) for a in node.names
    }
    imported |= {
        (node.module or "").split(".")[0] for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)
    }
    assert not imported & {"torch", "transformers"}, f"{name} imports a test-only reference library"


def test_the_graph_sees_real_edges():
    """Guards the parser itself: edges that exist must be found."""
    assert "zoo.config" in GRAPH["zoo.presets"] and "zoo.presets" in GRAPH["zoo.train.config"]
    assert "zoo.train.loop" in GRAPH["zoo.train.cli"] and "zoo.layers.stack" in GRAPH["zoo.model"]


def test_every_declared_dependency_is_used():
    """pyproject's runtime dependencies are each imported by zoo (no dead weight in every install)."""
    import tomllib

    pyproject = tomllib.loads((ZOO.parent / "pyproject.toml").read_text())
    import_names = {"pyyaml": "yaml", "orbax-checkpoint": "orbax"}
    used = set()
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                used |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                used.add((node.module or "").split(".")[0])
    for requirement in pyproject["project"]["dependencies"]:
        name = re.split(r"[<>=!~\[ ]", requirement)[0].lower()
        assert import_names.get(name, name) in used, f"{name} is declared but zoo never imports it"
