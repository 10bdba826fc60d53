"""The code's shape, checked: packages import only downwards (FCS → sample → cohort), modules,
functions and classes stay small, every rule file reaches its package in one hop, every rule script
is named after its rule, and the stages that do not gate do not load FlowKit."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "mrdflow"

#: Each package or top-level module and its layer: code may import its own layer or lower ones.
LAYERS = {
    "errors": 0,
    "atomic": 1, "panels": 1, "formatting": 1,
    "config": 2,
    "io": 3, "metrics": 3,
    "gating": 4, "clustering": 4,
    "calibration": 4.5,  # a lab tool over gating/io/config: below the per-sample stage, never importing it
    "sample": 5,
    "review": 5.5,  # the FlowJo review loop: re-gates samples (sample) with reviewed gates; the cohort reads its tables
    "cohort": 6,
    "demo": 7, "rules": 7,
}
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_CLASS_LINES = 700, 120, 400


def _unit(module: str) -> str:
    """'mrdflow.gating._engine' -> 'gating'; 'mrdflow.config' -> 'config'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mrdflow"


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        yield path, ".".join(rel.parts).removesuffix(".__init__")


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("mrdflow"):
            if node.module == "mrdflow":
                yield from (f"mrdflow.{a.name}" for a in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("mrdflow."))


def test_every_package_has_a_layer():
    units = {_unit(m) for _, m in _modules()} - {"mrdflow"}
    assert units <= set(LAYERS), f"add to LAYERS: {sorted(units - set(LAYERS))}"


def test_packages_import_only_downwards():
    upward = []
    for path, module in _modules():
        me = _unit(module)
        if me == "mrdflow":
            continue
        for target in _imports(ast.parse(path.read_text())):
            other = _unit(target)
            if other != me and LAYERS.get(other, -1) > LAYERS[me]:
                upward.append(f"{module} imports {target}")
    assert not upward, "\n".join(upward)


def test_sizes():
    big = []
    for path, module in _modules():
        text = path.read_text()
        n = len(text.splitlines())
        if n > MAX_MODULE_LINES:
            big.append(f"{module}: {n} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                length = node.end_lineno - node.lineno + 1
                limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
                if length > limit:
                    big.append(f"{module}.{node.name}: {length} lines")
    assert not big, "\n".join(big)


def _rules(smk: Path) -> dict[str, str | None]:
    """rule name -> its script's file name (None for rules without one)."""
    out, current = {}, None
    for line in smk.read_text().splitlines():
        m = re.match(r"\s*rule (\w+):", line)
        if m:
            current = m.group(1)
            out[current] = None
        s = re.match(r'\s*"\.\./scripts/(\w+\.py)"', line)
        if s and current:
            out[current] = s.group(1)
    return out


def test_rule_files_reach_their_package_and_scripts_are_named_after_their_rules():
    scripts = set()
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        if smk.stem == "common":
            continue
        assert (SRC / smk.stem / "__init__.py").is_file(), f"{smk.name}: no package mrdflow.{smk.stem}"
        for rule, script in _rules(smk).items():
            assert script == f"{rule}.py", f"{smk.name}: rule {rule} runs {script}"
            scripts.add(script)
    on_disk = {p.name for p in (REPO / "workflow" / "scripts").glob("*.py")}
    assert on_disk == scripts, f"scripts without a rule: {sorted(on_disk - scripts)}"
    for name in on_disk:
        text = (REPO / "workflow" / "scripts" / name).read_text()
        assert "sys.path" not in text, name
        assert "config = setup(smk)" in text, f"{name}: not of the rule-script shape"


@pytest.mark.parametrize("names", [
    "from mrdflow.sample import finish_sample",
    "from mrdflow.cohort import sample_metrics_rows, COHORT_FIGURES",
    "from mrdflow.clustering import PCModel",
    "import mrdflow.gating",
    "import mrdflow.calibration",
])
def test_stages_that_do_not_gate_do_not_load_flowkit(names):
    code = f"{names}\nimport sys\nprint(sorted(m for m in ('flowkit', 'bokeh') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", (names, r.stdout)
