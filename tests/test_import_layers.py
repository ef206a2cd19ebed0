"""The import graph points one way: contract/errors/console/paths <- data <- trainer <- serving | pipeline <- cli,
and inside the trainer: transform | backbones <- model | export <- enrollment | evaluation <- the
trainer's entry points (`sicot.trainer.task`, `cli`, `options`, ...; see trainer/__init__.py).

Every `import` counts, function-local ones included, so a cycle cannot hide inside a function.
An ast walk rather than grimp/import-linter: those discover a package's modules by walking its
folder, and setup.py maps `pipeline/`, `trainer/` and `serving/` (outside `sicot/`) to
`sicot.pipeline`, `sicot.trainer` and `sicot.serving`, which such a walk never sees.
"""
import ast
import os

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

# Lower layers never import higher ones. Packages on one layer are independent: neither
# imports the other (the pipeline names trainer code by dotted string and never serves; the
# server reads any SavedModel by its signatures).
LAYERS = (
    ("sicot.contract", "sicot.errors", "sicot.console", "sicot.paths"),
    ("sicot.data",),
    ("sicot.trainer.transform", "sicot.trainer.backbones"),
    ("sicot.trainer.model", "sicot.trainer.export"),
    ("sicot.trainer.enrollment", "sicot.trainer.evaluation"),
    ("sicot.trainer",),
    ("sicot.pipeline", "sicot.serving"),
    ("sicot.cli", "sicot.demo", "sicot"),
)


def _package_dirs():
    """{package: folder} from setup.py's `_SUBPACKAGES` (the layout's one source of truth)."""
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "_SUBPACKAGES":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no _SUBPACKAGES")


def _modules():
    """{module name: path} of every project module."""
    modules = {}
    for package, folder in _package_dirs().items():
        for name in sorted(os.listdir(os.path.join(ROOT, folder))):
            if name.endswith(".py"):
                module = package if name == "__init__.py" else f"{package}.{name[:-3]}"
                modules[module] = os.path.join(ROOT, folder, name)
    return modules


def _imports(module, path, known):
    """The project modules `module` imports, anywhere in the file, with line numbers."""
    found = []
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod; `from mod import name`, mod.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                     for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.append((name, node.lineno))
    return found


def _layer(module):
    best = None
    for index, layer in enumerate(LAYERS):
        for package in layer:
            if module == package or module.startswith(package + "."):
                if best is None or len(package) > len(best[1]):
                    best = (index, package)
    return best


MODULES = _modules()
GRAPH = {m: _imports(m, p, MODULES) for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    assert [m for m in MODULES if _layer(m) is None] == []
    assert {"sicot.contract", "sicot.errors", "sicot.trainer.task", "sicot.serving.server",
            "sicot.pipeline.pipeline", "sicot.data.importer"} <= set(MODULES)


def _wrong_imports(module, imports):
    wrong = []
    level, package = _layer(module)
    for imported, line in imports:
        other_level, other_package = _layer(imported)
        if other_level > level or (other_level == level and other_package != package):
            wrong.append(f"{MODULES.get(module, module)}:{line}: {module} ({package}) imports "
                         f"{imported} ({other_package})")
    return wrong


def test_imports_point_down_the_layers():
    wrong = [w for module, imports in GRAPH.items() for w in _wrong_imports(module, imports)]
    assert wrong == [], "\n".join(wrong)


def test_trainer_sub_packages_are_layers():
    packages = {m.rpartition(".")[0] for m in MODULES if m.startswith("sicot.trainer.")}
    assert {"sicot.trainer.transform", "sicot.trainer.backbones", "sicot.trainer.model",
            "sicot.trainer.export", "sicot.trainer.enrollment",
            "sicot.trainer.evaluation"} <= packages
    for package in packages - {"sicot.trainer"}:
        assert _layer(package + ".x")[1] == package, f"{package} has no layer of its own"


@pytest.mark.parametrize("module, source", [
    ("sicot.trainer.model.sicot_model", "from sicot.trainer.enrollment import catalogue\n"),
    ("sicot.trainer.transform.images", "from sicot.trainer.model.config import ModelConfig\n"),
    ("sicot.trainer.export.saved_model", "def f():\n    from sicot.trainer import task\n"),
    ("sicot.trainer.enrollment.prototypes", "from sicot.trainer.evaluation import band_accuracy\n"),
    ("sicot.trainer.model.config", "from sicot.trainer.export import folders\n"),
])
def test_an_upward_or_sideways_import_is_caught(tmp_path, module, source):
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert len(_wrong_imports(module, _imports(module, str(path), MODULES))) == 1


def test_no_import_cycle():
    """No cycle between modules, not even one closed by an import inside a function."""
    edges = {m: sorted({i for i, _ in imports}) for m, imports in GRAPH.items()}
    state, stack, cycles = {}, [], []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for imported in edges[module]:
            if state.get(imported) == "open":
                cycles.append(" -> ".join(stack[stack.index(imported):] + [imported]))
            elif imported not in state:
                visit(imported)
        stack.pop()
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert cycles == [], "\n".join(cycles)


def test_bench_scripts_use_public_names_only():
    private = []
    for name in sorted(os.listdir(os.path.join(ROOT, "bench"))):
        if not name.endswith(".py"):
            continue
        path = os.path.join(ROOT, "bench", name)
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sicot"):
                private += [f"bench/{name}:{node.lineno}: {node.module}.{a.name}"
                            for a in node.names if a.name.startswith("_")]
    assert private == [], "\n".join(private)


@pytest.mark.parametrize("source, expected", [
    ("from sicot.serving import client\n", "sicot.serving.client"),
    ("def f():\n    from sicot.trainer.task import run_fn\n", "sicot.trainer.task"),
    ("from . import contract\n", "sicot.contract"),
])
def test_imports_are_found_wherever_they_are(tmp_path, source, expected):
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert [m for m, _ in _imports("sicot.probe", str(path), MODULES)] == [expected]
