"""Code, tests, docs and shipped data point only at what a user of the repository has: its own docs/ and upstream
sources. Private working notes and the team's tracker do not ship, so a reference to them is a dead link."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".json", ".txt", ".cfg", ".ini", ".html", ".j2"}
# Built from parts so this file does not match itself.
FORBIDDEN = [
    ("the private notes folder", re.compile(r"\.\./" + "shared")),
    ("a private research note", re.compile("research" + r"/[a-z_-]+\.md")),
    ("a private setup or design note", re.compile(r"\b(" + "SETUP" + "|" + "DESIGN" + r")\.md\b")),
    # A number in our own tracker; upstream issues are written as links or owner/repo#N.
    ("a tracker issue number", re.compile(r"(?<![/\w#])[Ii]ssues? #?\d+\b")),
]


def shipped_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout ({listed.stderr.strip()}): the reference scan lists files with git")
    return [REPO_ROOT / name for name in listed.stdout.splitlines()
            if Path(name).suffix in TEXT_SUFFIXES and (REPO_ROOT / name).is_file()]


def test_no_reference_to_private_notes_or_tracker_issues() -> None:
    files = shipped_text_files()
    assert len(files) > 100, "the scan found almost no files: is the listing broken?"
    found = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for what, pattern in FORBIDDEN:
                if pattern.search(line):
                    found.append(f"{path.relative_to(REPO_ROOT)}:{number}: {what}: {line.strip()[:100]}")
    assert not found, "references a user cannot follow:\n" + "\n".join(found)


@pytest.mark.parametrize("line", ["see " + "../" + "shared/notes", "from research" + "/planning.md §7",
                                  "issue" + " 12 says", "fixed in Issue" + " #3"])
def test_the_scan_catches_each_kind(line: str) -> None:
    assert any(pattern.search(line) for _, pattern in FORBIDDEN)


@pytest.mark.parametrize("line", ["vllm-project/vllm#38654", "https://github.com/vllm-project/vllm/issues/1234",
                                  "an issue with 3 replicas", "docs/setup.md"])
def test_upstream_references_pass(line: str) -> None:
    assert not any(pattern.search(line) for _, pattern in FORBIDDEN)
