"""The engine's layers, bottom up: a module never imports from a layer above its own."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ferry"
LAYERS = ["errors", "files", "inputs", "layout", "kvm", "memory", "boot", "devices", "guests", "machine", "snapshot",
          "migration", "store", "control", "vmprocess", "host", "checkpoint", "lab", "cli"]


STRING_IMPORT = re.compile(r"ferry(\.[a-z_][a-z0-9_]*)+")


def layer_of(module: str) -> int:
    return LAYERS.index(module.split(".")[0]) if module.split(".")[0] in LAYERS else -1


def imports_of(path: Path, strings: bool = True) -> set[str]:
    """Engine modules named by ``path``'s imports, as paths below the package; with ``strings``
    also modules named in strings (``import_module("ferry.x")``, ``python -m ferry.x``)."""
    here = path.relative_to(PACKAGE).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[:-node.level]) if len(here) >= node.level else []
                target = base + (node.module.split(".") if node.module else [])
                names = [".".join(target)] if node.module else [".".join(target + [a.name]) for a in node.names]
            elif node.module and node.module.startswith("ferry."):
                names = [node.module[len("ferry."):]]
            else:
                continue
            found.update(n for n in names if n)
        elif isinstance(node, ast.Import):
            found.update(a.name[len("ferry."):] for a in node.names if a.name.startswith("ferry."))
        elif strings and isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and STRING_IMPORT.fullmatch(node.value):
            # importlib.import_module("ferry.x") and "python -m ferry.x" name modules too.
            found.add(node.value[len("ferry."):])
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_higher_layer(path):
    own = layer_of(".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    higher = sorted(m for m in imports_of(path) if layer_of(m) > own)
    assert not higher, f"{path.relative_to(PACKAGE)} (layer {LAYERS[own]}) imports {higher}"


def test_migration_takes_guest_memory_from_the_memory_layer_not_from_snapshots():
    """Chunk digests and the dirty log serve both; migration must not need the snapshot package."""
    for path in sorted((PACKAGE / "migration").glob("*.py")):
        assert not [m for m in imports_of(path) if m.split(".")[0] == "snapshot"], path.name
    assert any(m.startswith("memory.") for m in imports_of(PACKAGE / "migration" / "sender.py"))


def test_string_and_plain_imports_are_seen():
    assert "cli.vms" in imports_of(PACKAGE / "cli" / "__init__.py")               # importlib.import_module("ferry...")
    assert "vmprocess.main" in imports_of(PACKAGE / "host" / "launcher.py")        # python -m ferry.vmprocess.main


def module_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycles():
    """No module imports itself through others (a process boundary such as ``python -m``
    is not an import, so strings do not count here)."""
    graph = {module_of(p): {m for m in imports_of(p, strings=False)} for p in MODULES}
    cycles = []

    def visit(module, trail):
        if module in trail:
            cycles.append(trail[trail.index(module):] + [module])
            return
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, trail + [module])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        visit(module, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def test_vm_processes_run_under_the_engines_own_interpreter(tmp_path):
    from ferry.host.launcher import engine_python
    venv = tmp_path / "venv"
    package = venv / "lib" / "python3.11" / "site-packages" / "ferry"
    package.mkdir(parents=True)
    (venv / "bin").mkdir()
    (venv / "bin" / "python").touch()
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    assert engine_python(package) == str(venv / "bin" / "python")
    import sys
    assert engine_python(tmp_path / "checkout" / "engine" / "ferry") == sys.executable
