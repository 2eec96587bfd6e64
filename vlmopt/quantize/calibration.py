"""Calibration (and held-out evaluation) data: image+text samples, formatted with the model's own processor and chat
template.

Three sources: a built-in synthetic set generated offline (tests and CI never touch the network), a folder of
images (captions optional: `photo.jpg` + `photo.txt`), or a JSONL file of `{"image": path, "prompt": text}` rows
(optional `"response"`). Held-out prompts for fidelity come from a disjoint synthetic stream (`HELDOUT_SEED_BASE`), so a
variant is never scored on what it was calibrated with.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import QuantizeInputError, describe_exception

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CALIBRATION_SEED_BASE = 0
HELDOUT_SEED_BASE = 1_000_000

_CALIBRATION_PROMPTS = (
    "Describe this image in detail.",
    "What shapes and colours can you see?",
    "Write a short caption for the picture.",
    "What is in the centre of the image?",
    "Is the background light or dark?",
    "Count the objects in the picture.",
)
_HELDOUT_PROMPTS = (
    "Explain what this picture shows.",
    "Which colour covers most of the image?",
    "Where is the largest shape?",
    "Give a one-line summary of the image.",
)
_RESPONSES = (
    "The image shows a {colour} {shape} on a {tone} background.",
    "There is a {colour} {shape} near the {place}.",
    "A {tone} picture with a {colour} {shape}.",
)
_COLOURS = {"red": (220, 40, 40), "green": (40, 180, 70), "blue": (40, 80, 220), "yellow": (230, 210, 40),
            "white": (245, 245, 245), "black": (15, 15, 15)}
_SHAPES = ("circle", "square", "line", "pattern")
_PLACES = ("top", "bottom", "left", "right", "center")


@dataclass(frozen=True)
class Sample:
    """One calibration or evaluation example. `image` is None for text-only models."""

    image: Any
    prompt: str
    response: str | None = None
    origin: str = ""


@dataclass(frozen=True)
class CalibrationSource:
    kind: str  # synthetic | folder | jsonl
    path: Path | None = None

    def label(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


def parse_source(value: str) -> CalibrationSource:
    """`synthetic`, a folder of images, or a `.jsonl` file; a missing path is a user error."""
    if value == "synthetic":
        return CalibrationSource("synthetic")
    path = Path(value).expanduser()
    if not path.exists():
        raise QuantizeInputError(f"--calib {value}: no such file or folder (use 'synthetic', a folder of images or "
                                 "a .jsonl file)")
    if path.is_dir():
        return CalibrationSource("folder", path.resolve())
    if path.suffix == ".jsonl":
        return CalibrationSource("jsonl", path.resolve())
    raise QuantizeInputError(f"--calib {value}: expected 'synthetic', a folder of images or a .jsonl file")


def synthetic_image(seed: int, size: tuple[int, int] = (96, 128)):
    """A deterministic picture: a coloured background, one shape and some noise, so images differ in content."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    height, width = size
    names = list(_COLOURS)
    background = np.array(_COLOURS[names[int(rng.integers(len(names)))]], dtype=np.float32)
    pixels = background + rng.normal(0, 25, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype("uint8"))
    draw = ImageDraw.Draw(image)
    colour = _COLOURS[names[int(rng.integers(len(names)))]]
    x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
    x1, y1 = x0 + int(rng.integers(width // 6, width // 2)), y0 + int(rng.integers(height // 6, height // 2))
    shape = _SHAPES[int(rng.integers(len(_SHAPES)))]
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=colour)
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=colour)
    elif shape == "line":
        draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(2, 8)))
    else:
        for step in range(0, width, 12):
            draw.line((step, 0, step, height), fill=colour, width=3)
    return image


def synthetic_samples(n: int, seed_base: int, prompts: Sequence[str], with_images: bool = True,
                      with_responses: bool = True) -> list[Sample]:
    samples = []
    for i in range(n):
        seed = seed_base + i
        rng = np.random.default_rng(seed + 7_919)
        response = None
        if with_responses:
            response = _RESPONSES[i % len(_RESPONSES)].format(
                colour=list(_COLOURS)[int(rng.integers(len(_COLOURS)))], shape=_SHAPES[int(rng.integers(4))],
                tone=("light", "dark")[int(rng.integers(2))], place=_PLACES[int(rng.integers(len(_PLACES)))])
        samples.append(Sample(
            image=synthetic_image(seed) if with_images else None,
            prompt=prompts[i % len(prompts)],
            response=response,
            origin=f"synthetic:{seed}",
        ))
    return samples


def heldout_samples(n: int, with_images: bool = True) -> list[Sample]:
    """Fidelity prompts: a synthetic stream disjoint from any calibration set (own seeds, own prompts)."""
    return synthetic_samples(n, HELDOUT_SEED_BASE, _HELDOUT_PROMPTS, with_images=with_images, with_responses=False)


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise QuantizeInputError(f"--calib: cannot read image {path}: {exc}") from exc


def folder_samples(folder: Path, n: int) -> list[Sample]:
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as exc:
        raise QuantizeInputError(f"--calib {folder}: cannot list the folder: {exc}") from exc
    if not files:
        raise QuantizeInputError(f"--calib {folder}: no images in the folder (looked for "
                                 f"{', '.join(IMAGE_SUFFIXES)})")
    samples = []
    for i, path in enumerate(files[:n]):
        caption_file = path.with_suffix(".txt")
        caption = caption_file.read_text().strip() if caption_file.is_file() else None
        samples.append(Sample(image=_open_image(path), prompt=_CALIBRATION_PROMPTS[i % len(_CALIBRATION_PROMPTS)],
                              response=caption or None, origin=str(path)))
    return samples


def jsonl_samples(path: Path, n: int) -> list[Sample]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise QuantizeInputError(f"--calib {path}: cannot read: {exc}") from exc
    samples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if len(samples) >= n:
            break
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise QuantizeInputError(f"--calib {path}:{number}: not valid JSON: {exc.msg}") from exc
        if not isinstance(row, dict) or not isinstance(row.get("image"), str) or not isinstance(row.get("prompt"), str):
            raise QuantizeInputError(f"--calib {path}:{number}: each line needs string fields 'image' and 'prompt'")
        image_path = Path(row["image"]).expanduser()
        if not image_path.is_absolute():
            image_path = path.parent / image_path
        if not image_path.is_file():
            raise QuantizeInputError(f"--calib {path}:{number}: image {image_path} not found")
        response = row.get("response")
        samples.append(Sample(image=_open_image(image_path), prompt=row["prompt"],
                              response=response if isinstance(response, str) else None, origin=f"{path}:{number}"))
    if not samples:
        raise QuantizeInputError(f"--calib {path}: no rows")
    return samples


def load_samples(source: CalibrationSource, n: int, with_images: bool = True) -> list[Sample]:
    if n < 1:
        raise QuantizeInputError("--samples must be at least 1")
    if source.kind == "synthetic":
        return synthetic_samples(n, CALIBRATION_SEED_BASE, _CALIBRATION_PROMPTS, with_images=with_images)
    assert source.path is not None
    samples = folder_samples(source.path, n) if source.kind == "folder" else jsonl_samples(source.path, n)
    if not with_images:
        samples = [Sample(image=None, prompt=s.prompt, response=s.response, origin=s.origin) for s in samples]
    return samples


def chat_messages(sample: Sample) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = [{"type": "image"}] if sample.image is not None else []
    content.append({"type": "text", "text": sample.prompt})
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    if sample.response:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": sample.response}]})
    return messages


def encode(processor: Any, sample: Sample) -> dict[str, Any]:
    """Chat template + processor -> the model inputs exactly as the processor produced them (numpy, batch of one).

    Nothing is sliced or reshaped: several families' vision inputs are not `[batch, ...]` tensors (Qwen2-VL's
    `pixel_values` are `[patches, features]` described by `image_grid_thw`; Idefics3 adds `pixel_attention_mask`,
    Mllama `aspect_ratio_ids`/`aspect_ratio_mask`/`cross_attention_mask`, LLaVA-NeXT `image_sizes`), and the vision
    tower needs each of them as produced.
    """
    add_generation_prompt = not sample.response
    template_owner = processor if getattr(processor, "chat_template", None) else getattr(processor, "tokenizer", None)
    templated = template_owner is not None and bool(getattr(template_owner, "chat_template", None))
    if not templated:
        if sample.image is not None:
            raise QuantizeInputError("the model folder has no chat template, so image prompts cannot be formatted")
        text = sample.prompt + (" " + sample.response if sample.response else "")
    else:
        text = template_owner.apply_chat_template(chat_messages(sample), tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)
    # A chat template writes its own BOS; tokenizing its output adds none, as vLLM does for chat requests.
    special = {"add_special_tokens": not templated}
    try:
        if sample.image is not None:
            encoded = processor(images=[sample.image], text=[text], return_tensors="pt", **special)
        else:
            tokenizer = getattr(processor, "tokenizer", processor)
            encoded = tokenizer([text], return_tensors="pt", **special)
    except Exception as exc:  # the processor's own failure on a well-formed sample: one line, not a traceback
        raise QuantizeInputError(f"the model's processor cannot encode a calibration sample ({sample.origin}): "
                                 f"{describe_exception(exc)}") from exc
    return {key: _to_numpy(value) for key, value in encoded.items()}


def _to_numpy(value: Any) -> Any:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()  # numpy has no bfloat16; the collator casts to the model's dtype
        return value.numpy()
    return np.asarray(value)


def sequence_length(encoded: dict[str, Any]) -> int:
    return int(np.asarray(encoded["input_ids"]).shape[-1])


def build_dataset(processor: Any, samples: Sequence[Sample], max_seq_len: int):
    """A `datasets.Dataset` of encoded samples; samples longer than `max_seq_len` are dropped, not truncated, because
    cutting a prompt can cut its image tokens and break the image-token count."""
    from datasets import Dataset

    rows, too_long = [], 0
    for sample in samples:
        row = encode(processor, sample)
        if sequence_length(row) > max_seq_len:
            too_long += 1
            continue
        rows.append(row)
    if not rows:
        raise QuantizeInputError(f"--max-seq-len {max_seq_len}: every calibration sample is longer "
                                 f"({too_long} dropped); raise --max-seq-len")
    return Dataset.from_list(rows), too_long


def make_collator(dtype: Any):
    """Batch size 1: the row is already a processor batch of one, so it is passed on as it is, as tensors; floating
    inputs (pixel values) in the model's dtype, as llm-compressor's Pixtral example does
    (examples/multimodal_vision/pixtral_example.py)."""
    import torch

    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        if len(batch) != 1:
            raise ValueError(f"calibration runs with batch size 1, got {len(batch)}")
        out = {}
        for key, value in batch[0].items():
            tensor = torch.as_tensor(np.asarray(value))
            if tensor.is_floating_point():
                tensor = tensor.to(dtype)
            out[key] = tensor
        return out

    return collate
