"""Model references: a local folder, or a hub id resolved through a pre-filled huggingface_hub cache (never the
network): cache hit with the commit recorded, a pinned revision, HF_HOME, offline miss, not-a-hub-id, an unreachable
hub falling back to the cache; and the CLI entry points turning a miss into one line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.hub_cache import fill_hub_cache
from vlmopt.cli import app
from vlmopt.hub import ModelNotFound, looks_like_hub_id, parse_hub_id, resolve_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def files(tmp_path: Path) -> Path:
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llava", "architectures": ["Llava"]}))
    (folder / "tokenizer_config.json").write_text("{}")
    return folder


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return folder


def test_hub_id_syntax() -> None:
    assert parse_hub_id("Qwen/Qwen2.5-VL-7B-Instruct") == ("Qwen/Qwen2.5-VL-7B-Instruct", None)
    assert parse_hub_id("org/name@v1.0") == ("org/name", "v1.0")
    for not_an_id in ("./org/name", "/abs/org", "a/b/c", "tiny-llava", "org/na me", "org--x/y", "~/models/x",
                      "org/name.git", ""):
        assert not looks_like_hub_id(not_an_id), not_an_id


def test_cache_hit_resolves_to_the_snapshot_and_records_the_commit(cache: Path, files: Path) -> None:
    snapshot = fill_hub_cache(cache, "org/tiny-vlm", files, COMMIT)
    ref = resolve_model("org/tiny-vlm")
    assert ref.path == snapshot.resolve() and (ref.path / "config.json").is_file()
    assert ref.hub is not None and (ref.hub.repo_id, ref.hub.revision) == ("org/tiny-vlm", COMMIT)
    assert ref.hub.requested_revision is None
    assert ref.name == "tiny-vlm"  # outputs are named after the repo, not after the commit folder


def test_pinned_revision_wins_over_main(cache: Path, files: Path) -> None:
    old = fill_hub_cache(cache, "org/tiny-vlm", files, COMMIT)
    newer = "f" * 40
    fill_hub_cache(cache, "org/tiny-vlm", files, newer)  # refs/main now points at the newer commit
    assert resolve_model("org/tiny-vlm").hub.revision == newer
    pinned = resolve_model(f"org/tiny-vlm@{COMMIT}")
    assert pinned.path == old.resolve() and pinned.hub.requested_revision == COMMIT


def test_hf_home_is_honoured(tmp_path: Path, files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fill_hub_cache(tmp_path / "home" / "hub", "org/tiny-vlm", files, COMMIT)
    assert resolve_model("org/tiny-vlm").hub.revision == COMMIT


def test_offline_miss_is_one_clear_line(cache: Path) -> None:
    with pytest.raises(ModelNotFound) as caught:
        resolve_model("org/not-cached", what="MODEL")
    message = str(caught.value)
    assert "\n" not in message
    assert "org/not-cached" in message and "HF_HUB_OFFLINE=1" in message and str(cache) in message
    assert not (cache / "models--org--not-cached").exists() or not any(cache.rglob("config.json"))


def test_missing_path_that_is_no_hub_id(cache: Path, tmp_path: Path) -> None:
    for reference in (str(tmp_path / "nope"), "./nope", "a/b/c"):
        with pytest.raises(ModelNotFound, match="no such folder"):
            resolve_model(reference)


def test_existing_local_folder_wins_over_a_hub_id(cache: Path, files: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fill_hub_cache(cache, "org/tiny-vlm", files, COMMIT)
    local = tmp_path / "work" / "org" / "tiny-vlm"
    local.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    ref = resolve_model("org/tiny-vlm")
    assert ref.path == local.resolve() and ref.hub is None


def test_incomplete_snapshot_is_named(cache: Path, tmp_path: Path) -> None:
    only_readme = tmp_path / "readme-only"
    only_readme.mkdir()
    (only_readme / "README.md").write_text("hello")
    fill_hub_cache(cache, "org/partial", only_readme, COMMIT)
    with pytest.raises(ModelNotFound, match=r"no config\.json"):
        resolve_model("org/partial")


def test_unreachable_hub_falls_back_to_the_cache(cache: Path, files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Online mode, but the hub endpoint refuses connections (a closed port on this machine, not the network)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    fill_hub_cache(cache, "org/tiny-vlm", files, COMMIT)
    announced: list[str] = []
    assert resolve_model("org/tiny-vlm", on_download=announced.append).hub.revision == COMMIT
    assert announced == ["org/tiny-vlm"]
    with pytest.raises(ModelNotFound, match="could not be reached"):
        resolve_model("org/not-cached")


def _assert_one_error_line(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_quantize_offline_miss_exits_2_and_writes_nothing(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "variants"
    result = CliRunner().invoke(app, ["quantize", "Qwen/Qwen2.5-VL-7B-Instruct", "--out", str(out)])
    _assert_one_error_line(result, "Qwen/Qwen2.5-VL-7B-Instruct", "HF_HUB_OFFLINE=1")
    assert not out.exists()


def test_benchmark_offline_miss_exits_2_and_writes_nothing(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "profiles"
    result = CliRunner().invoke(app, ["benchmark", "org/not-cached", "--out", str(out)])
    _assert_one_error_line(result, "org/not-cached", "HF_HUB_OFFLINE=1")
    result = CliRunner().invoke(app, ["benchmark", "--endpoint", "http://127.0.0.1:9", "--model", "m",
                                      "--tokenizer", "org/not-cached", "--out", str(out)])
    _assert_one_error_line(result, "--tokenizer", "org/not-cached")
    result = CliRunner().invoke(app, ["benchmark", str(tmp_path / "missing-folder"), "--out", str(out)])
    _assert_one_error_line(result, "not found")
    assert not out.exists()


def test_benchmark_source_from_the_cache_is_named_after_the_repo(cache: Path, files: Path) -> None:
    from vlmopt.bench.targets import resolve_targets

    fill_hub_cache(cache, "org/tiny-vlm", files, COMMIT)
    (target,) = resolve_targets("org/tiny-vlm")
    assert target.model == target.variant == "tiny-vlm"
    assert target.hub is not None and target.hub.revision == COMMIT
    assert target.model_path is not None and target.model_path.name == COMMIT
