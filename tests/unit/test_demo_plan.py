"""The demo's cloud plan step writes what `vlmopt plan` writes (through the shared writer), and the demo package
has no import circle (its steps import the shared types from demo/common.py, not from the runner)."""

from __future__ import annotations

import ast
from contextlib import nullcontext
from pathlib import Path

import pytest

import vlmopt.demo
from vlmopt.demo.cloud import plan_cloud
from vlmopt.demo.common import DemoOptions, DemoStepFailed
from vlmopt.paths import data_file
from vlmopt.schemas.common import load_model
from vlmopt.schemas.plan import Plan

pytestmark = pytest.mark.unit


class RecordingUI:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def step(self, index: int, title: str) -> None:
        self.lines.append(f"step {index} {title}")

    def info(self, text: str) -> None:
        self.lines.append(text)

    def warn(self, text: str) -> None:
        self.lines.append(f"warn {text}")

    def bench_progress(self):
        return nullcontext()


def test_cloud_plan_step_writes_plan_bundle_and_report(tmp_path: Path) -> None:
    ui = RecordingUI()
    workload = data_file("workloads/sla-200-500.yaml")
    plan_path, report_html = plan_cloud(DemoOptions(out_dir=tmp_path, cloud_workload=workload), tmp_path, ui)
    plan = load_model(Plan, plan_path)
    assert plan.name == "cloud-sla-200-500" and plan_path == tmp_path / "deploy" / plan.name / "plan.json"
    assert (plan_path.parent / "vllm" / "replicas.json").is_file()  # the deploy bundle
    assert report_html == tmp_path / "reports" / plan.name / "report.html" and report_html.is_file()
    assert any("deploy bundle" in line for line in ui.lines) and any("cost report" in line for line in ui.lines)


def test_bad_cloud_workload_fails_the_step_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "w.yaml"
    bad.write_text("name: x\nservices: []\n")
    with pytest.raises(DemoStepFailed) as err:
        plan_cloud(DemoOptions(out_dir=tmp_path, cloud_workload=bad), tmp_path, RecordingUI())
    assert "services" in str(err.value) and "\n" not in str(err.value)


def _imports(path: Path, package: str) -> set[str]:
    """Sibling modules of the demo package that `path` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                found.add(node.module or "")
            elif node.module and node.module.startswith(package + "."):
                found.add(node.module.removeprefix(package + "."))
    return found


def test_demo_modules_import_each_other_without_a_circle() -> None:
    folder = Path(vlmopt.demo.__file__).parent
    graph = {p.stem: _imports(p, "vlmopt.demo") - {""} for p in folder.glob("*.py") if p.stem != "__init__"}
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        assert module not in visiting, f"import circle: {' -> '.join([*trail, module])}"
        if module in done or module not in graph:
            return
        visiting.add(module)
        for target in graph[module]:
            visit(target, [*trail, module])
        visiting.discard(module)
        done.add(module)

    for module in graph:
        visit(module, [])
    assert "common" in graph["runner"] and "runner" not in graph["local"] | graph["cloud"]
