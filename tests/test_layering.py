"""The packages' layering, read from the source (every import, module-level, lazy and type-only alike):

    hf_common  <-  hf_analyze          (no torch in either)
    hf_common  <-  hf_runtime  <-  hf_fuse
                   hf_runtime  <-  hf_eval

hf_runtime imports nothing from hf_fuse, hf_eval or hf_analyze; hf_fuse nothing from hf_eval; and no package's modules
import each other in a circle, so each package reads bottom-up with nothing importing upward."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["hf_common", "hf_analyze", "hf_runtime", "hf_fuse", "hf_eval"]
ALLOWED = {"hf_common": set(), "hf_analyze": {"hf_common"}, "hf_runtime": {"hf_common"},
           "hf_fuse": {"hf_common", "hf_runtime", "hf_analyze"}, "hf_eval": {"hf_common", "hf_runtime", "hf_analyze"}}
TORCH_FREE = {"hf_common", "hf_analyze"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Every module ``path`` imports (absolute names), wherever the import statement is (or only at module level)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text())
    for node in (tree.body if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            found.add(prefix)
            found |= {f"{prefix}.{alias.name}" for alias in node.names}  # `from . import x` names a module
    return found


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_what_is_below_them(package):
    wrong = []
    for path in _sources(package):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in PACKAGES and top != package and top not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
        # torch-free at import; a lazy import for what needs torch (a legacy .bin adapter) is allowed
        for name in _imports(path, top_level_only=True) if package in TORCH_FREE else ():
            if name.split(".")[0] in ("torch", "transformers", "peft", "accelerate"):
                wrong.append(f"{path.relative_to(ROOT)} imports {name} at module level")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle_within_a_package(package):
    modules = {_module_name(p): p for p in _sources(package)}
    graph = {m: {n for n in _imports(p) if n in modules and n != m} for m, p in modules.items()}
    for m in graph:  # a package's __init__ that imports its submodules is the package itself, not a circle
        graph[m] = {n for n in graph[m] if not (m.startswith(n + ".") and modules[n].name == "__init__.py")}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_runtime_loads_without_fusion_or_evaluation_and_the_analyzer_without_torch():
    code = ("import sys, importlib, pkgutil, hf_runtime\n"
            "for m in pkgutil.iter_modules(hf_runtime.__path__): importlib.import_module('hf_runtime.' + m.name)\n"
            "bad = [n for n in sys.modules if n.split('.')[0] in ('hf_fuse', 'hf_eval', 'hf_analyze')]\n"
            "assert not bad, bad\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    code = ("import sys, hf_analyze.cli, hf_analyze.planner, hf_analyze.execute, hf_common.plan, hf_common.settings\n"
            "assert 'torch' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _importers() -> dict[str, set[str]]:
    """Every module of ours -> the modules (outside tests) that import it."""
    out: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in _sources(package):
            for name in _imports(path):
                out.setdefault(name, set()).add(_module_name(path))
    return out


def _method_home(module: str) -> str | None:
    """``hf_fuse.methods.X`` for a module of method X (a folder or a file under hf_fuse/methods), else None."""
    parts = module.split(".")
    homes = {p.stem for p in (ROOT / "hf_fuse/methods").iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    if parts[:2] == ["hf_fuse", "methods"] and len(parts) > 2 and parts[2] in homes - {"base", "__init__"}:
        return ".".join(parts[:3])
    return None


def test_no_module_of_hf_fuse_outside_methods_imports_a_methods_own_module():
    wrong = [f"{_module_name(p)} imports {name}" for p in _sources("hf_fuse") if _method_home(_module_name(p)) is None
             for name in _imports(p) if _method_home(name) is not None and name.split(".")[2] != "sources"]
    assert not wrong, "\n".join(wrong)


def test_the_runtime_holds_nothing_only_one_method_uses():
    importers = _importers()
    for path in _sources("hf_runtime"):
        module = _module_name(path)
        users = {m for m in importers.get(module, set()) if not m.startswith("hf_runtime")}
        homes = {_method_home(m) for m in users}
        assert not (users and len(homes) == 1 and None not in homes), \
            f"{module} is used only by {homes.pop()}: it belongs there"


def test_no_command_function_takes_more_than_twelve_parameters():
    import inspect

    import click

    from hf_analyze.cli import main as hf_analyze
    from hf_eval.cli import main as hf_eval
    from hf_fuse.cli import main as hf_fuse

    def commands(command):
        yield command
        for sub in getattr(command, "commands", {}).values():
            yield from commands(sub)

    wide = []
    for command in (c for tool in (hf_analyze, hf_eval, hf_fuse) for c in commands(tool)):
        if isinstance(command, click.Command) and command.callback is not None:
            named = [p for p in inspect.signature(command.callback).parameters.values() if p.kind != p.VAR_KEYWORD]
            if len(named) > 12:
                wide.append(f"{command.name}: {len(named)} parameters")
    assert not wide, "; ".join(wide)


def test_no_benchmark_edits_the_import_path():
    """benchmarks/ is a package run as ``python -m benchmarks``: its modules import each other by name."""
    edits = [f"{p.relative_to(ROOT)}:{n}" for p in sorted((ROOT / "benchmarks").rglob("*.py"))
             for n, line in enumerate(p.read_text().splitlines(), 1) if "sys.path" in line]
    assert not edits, "sys.path edited in " + ", ".join(edits)
