"""The import graph: a dependency-free core (study.core: no torch, no Ray, none of the other
packages) that study, trainables and analysis import; trainables and analysis use nothing else
of study."""
import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PACKAGES = ("study", "trainables", "analysis")


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_core_imports_no_torch_no_ray_and_no_other_package():
    code = ("import sys, study.core.spec, study.core.metrics, study.core.layout, "
            "study.core.identity, study.core.catalog, study.core.errors; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray', 'trainables', "
            "'analysis', 'torchvision', 'optuna'}), sorted(m for m in sys.modules "
            "if m.startswith('study.') and not m.startswith('study.core')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["[]", "[]"], r.stdout


def test_core_modules_import_only_the_core():
    for f in (REPO / "study" / "core").glob("*.py"):
        for m in _imports(f):
            assert m.split(".")[0] not in ("torch", "ray", "trainables", "analysis"), (f, m)
            assert not m.startswith("study.") or m.startswith("study.core"), (f, m)


def test_trainables_and_analysis_use_only_the_core_of_study():
    for pkg in ("trainables", "analysis"):
        for f in (REPO / pkg).glob("*.py"):
            for m in _imports(f):
                if m == "study" or m.startswith("study."):
                    assert m.startswith("study.core"), (f, m)
                assert not m.startswith("analysis" if pkg == "trainables" else "trainables."), (f, m)
