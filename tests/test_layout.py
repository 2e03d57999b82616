"""The package is laid out by pipeline stage, and a stage never imports a later one."""

from __future__ import annotations

import ast
from pathlib import Path

import toa_kernel

PACKAGE = Path(toa_kernel.__file__).parent
# Pipeline order: each stage may import itself and the stages before it.
STAGES = ["core", "system", "source", "kernel", "boot", "module", "verify", "lab", "fleet", "demo"]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}:{node.lineno}: relative import; write toa_kernel.STAGE.MODULE")
            if node.module and node.module.startswith("toa_kernel"):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
            found += [(node.lineno, name) for name in names if name.startswith("toa_kernel")]
    return found


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_lives_in_a_stage_package():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert loose == []
    assert sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()) == sorted(STAGES)


def test_no_stage_imports_a_later_stage():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        stage = path.relative_to(PACKAGE).parts[0]
        if stage not in STAGES:
            continue
        for lineno, module in imported_modules(path):
            other = stage_of(module)
            if other in STAGES and STAGES.index(other) > STAGES.index(stage):
                violations.append(f"{path.relative_to(PACKAGE)}:{lineno}: {stage} imports {module}")
    assert violations == []


def test_the_checker_sees_a_backward_import(tmp_path):
    sample = tmp_path / "mod.py"
    sample.write_text("from toa_kernel.verify.facts import gather\n")
    assert [stage_of(m) for _, m in imported_modules(sample)] == ["verify"]
