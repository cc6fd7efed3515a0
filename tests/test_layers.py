"""The layers of lib/ and the imports allowed between them, checked on every import of every module.

Each package of lib/ is a layer; a module may import its own layer and the layers (or single modules)
its row of ALLOWED names, nothing else in lib, and never the entry points. Every `import` counts:
module-level and function-local, absolute and relative, `from lib import x` and
`importlib.import_module("lib.x")` with a literal name. lib/__init__.py shows the same table.
"""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

LIB = REPO / "lib"
# bottom to top; a layer may import itself and what its row names ("data.registry": that module only)
ALLOWED: dict[str, tuple[str, ...]] = {
    "core": (),
    "tiered": ("core",),
    "models": ("core", "tiered"),
    "data": ("core",),
    "pruning": ("core", "tiered", "models"),
    "eval": ("core", "models", "data"),
    "training": ("core", "models", "data", "tiered"),
    "experiments": ("core", "data.registry", "eval.report", "eval.tasks", "training.checkpoints"),
}
ENTRY_POINTS = ("scripts", "dense_ft", "main_block_three_tier", "tests", "conftest")  # lib never imports these
NO_TORCH = ("lib.data.registry", "lib.eval.report", "lib.eval.batching")  # besides every module of lib.experiments and lib.eval.tasks


def module_name(path: Path) -> str:
    """lib/data/registry.py -> "lib.data.registry"; lib/data/__init__.py -> "lib.data"."""
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(LIB.rglob("*.py"))}


def resolve(name: str) -> str:
    """The module an imported name lives in: the longest prefix of `name` that is a module of lib."""
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def imported(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, target) for every import in `path`, anywhere in the file; a target is a dotted name as imported
    (`from lib.data import registry` gives lib.data.registry, relative imports made absolute)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return found


def layer(module: str) -> str | None:
    """The layer of a module of lib ("lib.data.registry" -> "data"); None for lib itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def allowed(source: str, target: str) -> bool:
    """Whether a module of layer `source` may import the module `target` of lib."""
    rest = target.split(".", 1)[1] if "." in target else ""
    return target == "lib" or layer(target) == source or any(
        rest == rule or rest.startswith(rule + ".") for rule in ALLOWED[source])


def violations() -> list[str]:
    """One line per forbidden import: file, line, the edge and the rule it breaks."""
    found = []
    for module, path in MODULES.items():
        where = path.relative_to(REPO)
        own = layer(module)
        if module != "lib" and own not in ALLOWED:
            found.append(f"{where}: in no layer; move it into one of lib/{', lib/'.join(ALLOWED)}")
            continue
        for line, name in imported(module, path):
            top = name.split(".")[0]
            if top in ENTRY_POINTS:
                found.append(f"{where}:{line}: imports {name}; lib never imports the entry points ({', '.join(ENTRY_POINTS)})")
            elif top == "lib" and own is not None and not allowed(own, resolve(name)):
                found.append(f"{where}:{line}: {own} imports {resolve(name)}; {own} may import "
                             f"{', '.join(ALLOWED[own]) or 'nothing else in lib'} (ALLOWED in tests/test_layers.py)")
    return found


def import_graph() -> dict[str, set[str]]:
    """{module: the modules of lib it imports}, an import of the module's own package left out (Python imports
    a package before its modules, so that is no cycle)."""
    graph = {}
    for module, path in MODULES.items():
        targets = {resolve(name) for _, name in imported(module, path) if name.split(".")[0] == "lib"}
        graph[module] = {t for t in targets if t != module and not module.startswith(t + ".")}
    return graph


def test_every_import_in_lib_follows_the_layer_table():
    found = violations()
    assert not found, "imports that break the layers:\n" + "\n".join(found)


def test_no_import_cycles_between_modules():
    try:
        graphlib.TopologicalSorter(import_graph()).prepare()
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle: {' -> '.join(err.args[1])}")
    tool = REPO.parent / "shared" / "tools" / "import_cycles.py"  # the project's own scan, where the checkout has it
    if tool.is_file():
        result = subprocess.run([sys.executable, str(tool), "lib"], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0 and "0 import cycle(s)" in result.stdout, result.stdout


def test_the_scan_sees_every_kind_of_import_and_the_rule_reads_the_table(tmp_path):
    source = ("import lib.core.cli\nfrom lib.data import registry\nfrom .. import cost\nfrom . import tiles\n"
              "def f():\n    from lib.eval import scoring\n    import importlib\n"
              "    importlib.import_module('lib.models.arch')\n")
    (tmp_path / "example.py").write_text(source)
    assert [name for _, name in imported("lib.tiered.example", tmp_path / "example.py")] == [
        "lib.core.cli", "lib.data.registry", "lib.cost", "lib.tiered.tiles", "lib.eval.scoring", "importlib",
        "lib.models.arch"]
    assert resolve("lib.data.registry.DatasetSpec") == "lib.data.registry" and resolve("lib.data.DataError") == "lib.data"
    assert allowed("pruning", "lib.tiered.tiles") and not allowed("pruning", "lib.eval.scoring")
    assert allowed("experiments", "lib.data.registry") and not allowed("experiments", "lib.data")
    assert not allowed("core", "lib.models.loading") and allowed("core", "lib.core.files")


def test_the_experiments_the_data_registry_and_the_task_metadata_import_without_torch():
    modules = [m for m in MODULES if m.startswith(("lib.experiments.", "lib.eval.tasks."))] + list(NO_TORCH)
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", f"{modules} import torch"


def test_packages_are_light_and_the_masks_do_not_import_the_driver():
    packages = [m for m, path in MODULES.items() if path.name == "__init__.py"]
    code = (f"import importlib, sys\nfor m in {packages!r}: importlib.import_module(m)\n"
            "assert 'torch' not in sys.modules, 'a package __init__ imports torch'\n"
            "import lib.pruning.masks\nassert 'lib.pruning.driver' not in sys.modules, 'masks imports the driver'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
