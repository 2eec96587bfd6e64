"""`vlmopt dev`: developer helpers (the tiny offline VLM used by tests and the demo)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, fail

dev_app = typer.Typer(
    help="Developer helpers: build the tiny offline VLMs used by tests and the demo.", no_args_is_help=True
)


@dev_app.command("tiny-model")
def tiny_model(
    out: Path = typer.Argument(..., help="Folder to write the tiny checkpoint to."),
    family: str = typer.Option("llava", "--family",
                               help="VLM family: llava, llava-onevision, qwen2-vl, qwen2.5-vl, gemma3, idefics3, "
                               "mistral3, mllama, internvl."),
    seed: int = typer.Option(0, help="Seed for weights and tokenizer; the same seed gives the same model."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing folder."),
) -> None:
    """Write a tiny random-weight VLM of a family (real config and processor classes, hub weight layout, the
    family's chat template and special tokens). Offline."""
    from vlmopt.testing.families import FAMILY_NAMES

    if family not in FAMILY_NAMES:
        fail(f"--family {family!r}: unknown family; choose from {', '.join(FAMILY_NAMES)}")
    try:
        from vlmopt.testing import TinyVlmSpec, build_tiny_vlm
        from vlmopt.testing.families import build_tiny_family
    except ImportError as exc:  # torch/transformers live in the `quantize` extra
        fail(f"the tiny model needs torch and transformers (pip install 'vlmopt[quantize]'): {exc}")
    if out.exists() and any(out.iterdir()) and not (out / "config.json").exists() and not overwrite:
        fail(f"{out} exists and is not a model folder; pass --overwrite or choose another path")
    from vlmopt.atomic import FolderNotOursError

    try:
        with console.status(f"building tiny {family} in {out}"):
            if family == "llava":
                path = build_tiny_vlm(out, TinyVlmSpec(seed=seed), overwrite=overwrite)
            else:
                path = build_tiny_family(family, out, seed=seed, overwrite=overwrite)
    except FolderNotOursError as exc:  # --overwrite replaces only a folder this command wrote
        fail(str(exc))
    console.print(f"tiny {family} written to [bold]{path}[/]")


def register(app: typer.Typer) -> None:
    app.add_typer(dev_app, name="dev")
