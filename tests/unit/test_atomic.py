"""vlmopt.atomic: a folder is replaced whole or not at all, only when it carries a marker; nothing is left beside it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vlmopt import atomic
from vlmopt.atomic import (
    STAGING_MARK,
    FolderNotOursError,
    atomic_folder,
    remove_stale_staging,
    stale_staging_dirs,
    write_folder,
)

MARKER = ".ours.json"


def tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def _old(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "out", {MARKER: "{}", "a.txt": "old", "sub/b.txt": "old b"}, (MARKER,))


def test_writes_the_whole_folder_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    final = write_folder(tmp_path / "x" / "out", {MARKER: "{}", "run.sh": "echo", "img.png": b"\x89PNG"},
                         (MARKER,), executable=("run.sh",))
    assert final == tmp_path / "x" / "out"
    assert (final / "img.png").read_bytes() == b"\x89PNG" and os.access(final / "run.sh", os.X_OK)
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["out"]
    assert final.stat().st_mode & 0o777 == 0o777 & ~_umask()  # shareable, not mkdtemp's 0700


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_rewrite_replaces_everything(tmp_path: Path) -> None:
    out = _old(tmp_path)
    write_folder(out, {MARKER: "{}", "c.txt": "new"}, (MARKER,))
    assert tree(out) == {MARKER: "{}", "c.txt": "new"}  # nothing of the old folder lingers
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_error_mid_write_keeps_the_old_folder(tmp_path: Path, error: BaseException) -> None:
    out = _old(tmp_path)
    before = tree(out)
    with pytest.raises(type(error)), atomic_folder(out, (MARKER,)) as staging:
        (staging / MARKER).write_text("{}")
        (staging / "a.txt").write_text("half")
        raise error
    assert tree(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_killed_mid_write_keeps_the_old_folder_and_the_leftover_is_cleaned_later(tmp_path: Path) -> None:
    out = _old(tmp_path)
    before = tree(out)
    script = textwrap.dedent(f"""
        import os, signal
        from vlmopt.atomic import atomic_folder
        with atomic_folder({str(out)!r}, [{MARKER!r}]) as staging:
            (staging / "a.txt").write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(repo)}, timeout=120)
    assert done.returncode == -9
    assert tree(out) == before
    [leftover] = [p for p in tmp_path.iterdir() if p.name != "out"]
    assert leftover.name.startswith(".out" + STAGING_MARK)
    assert stale_staging_dirs(tmp_path) == [leftover]  # its process is gone
    assert remove_stale_staging(tmp_path) == [leftover] and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_live_process_staging_folder_is_not_stale(tmp_path: Path) -> None:
    with atomic_folder(tmp_path / "out", (MARKER,)) as staging:
        (staging / MARKER).write_text("{}")
        assert stale_staging_dirs(tmp_path) == []
    dead = tmp_path / f".gptq{STAGING_MARK}999999999-abcd1234"
    dead.mkdir()
    assert stale_staging_dirs(tmp_path) == [dead]


def test_refuses_a_folder_without_the_marker(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(FolderNotOursError, match=r"mine exists and is not a deploy bundle .*\.ours\.json"):
        write_folder(mine, {MARKER: "{}"}, (MARKER,), what="deploy bundle")
    assert tree(mine) == {"notes.txt": "keep me"}
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]
    (tmp_path / "file").write_text("a file")
    with pytest.raises(FolderNotOursError, match="a file without"):
        write_folder(tmp_path / "file", {MARKER: "{}"}, (MARKER,))


def test_empty_folder_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    write_folder(tmp_path / "out", {MARKER: "{}"}, (MARKER,))
    assert tree(tmp_path / "out") == {MARKER: "{}"}


def test_content_without_the_marker_is_not_put_in_place(tmp_path: Path) -> None:
    """Otherwise the next run could not replace it."""
    out = _old(tmp_path)
    before = tree(out)
    with pytest.raises(RuntimeError, match="without its marker"):
        write_folder(out, {"a.txt": "new"}, (MARKER,))
    assert tree(out) == before and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failed_final_rename_puts_the_old_folder_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = _old(tmp_path)
    before = tree(out)
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # first: the old folder aside; second: staging onto the target
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match="rename failed"):
        write_folder(out, {MARKER: "{}", "a.txt": "new"}, (MARKER,))
    assert tree(out) == before and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_folder_that_appears_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(FolderNotOursError), atomic_folder(out, (MARKER,)) as staging:
        (staging / MARKER).write_text("{}")
        out.mkdir()
        (out / "theirs.txt").write_text("keep")
    assert tree(out) == {"theirs.txt": "keep"} and [p.name for p in tmp_path.iterdir()] == ["out"]
