"""Request specs: what each benchmark request asks for (text, images, output length).

Two sources: synthetic (text sized to a token count, synthetic images from images.py) or a user's JSONL dataset
(one request per line, the shape of vLLM's `custom_image` dataset, research/benchmark.md §1.4).
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import Field, ValidationError, model_validator

from vlmopt.schemas.common import ContractError, StrictModel, format_validation_error

from .images import ImagePlanner, to_data_url

TokenCounter = Callable[[str], int]

# Plain words a byte-level BPE tokenizes into about one token each; random order keeps prompts distinct, so the
# prefix cache cannot share work between requests (the same reason vLLM's random datasets use random token ids).
_WORD_TEXT = (
    "the a one two red green blue small large cat dog bird car tree house river road sky cloud sun moon street "
    "window door table chair image picture photo shows there is are of in on at with near under above left right "
    "top bottom color shape square circle line light shadow morning evening night day water field city people"
)
_WORDS = _WORD_TEXT.split()


@dataclass
class RequestSpec:
    index: int
    prompt: str
    images: list[str] = field(default_factory=list)  # data: URLs (or http(s) URLs from a dataset)
    image_sizes: list[str] = field(default_factory=list)  # "WxH" per image, "?" when unknown
    image_keys: list[str] = field(default_factory=list)
    max_tokens: int = 16

    @property
    def num_images(self) -> int:
        return len(self.images)


def words_to_tokens(words: list[str], target: int, count: TokenCounter | None) -> str:
    """The longest prefix of `words` whose token count is <= target (all of it measured by `count` when given)."""
    if count is None:
        return " ".join(words[:target])
    low, high = 1, min(len(words), target * 2)
    while low < high:  # binary search: token counts grow monotonically with the number of words
        mid = (low + high + 1) // 2
        if count(" ".join(words[:mid])) <= target:
            low = mid
        else:
            high = mid - 1
    return " ".join(words[:low])


def sized_prompt(rng: np.random.Generator, input_tokens: int, count: TokenCounter | None) -> str:
    words = [_WORDS[i] for i in rng.integers(len(_WORDS), size=max(2 * input_tokens, 2))]
    return words_to_tokens(words, max(input_tokens, 1), count)


def synthetic_requests(
    num: int,
    *,
    input_tokens: int,
    output_tokens: int,
    images_per_request: int,
    planner: ImagePlanner | None,
    seed: int = 0,
    count_tokens: TokenCounter | None = None,
    start_index: int = 0,
) -> list[RequestSpec]:
    """`num` requests of `input_tokens` text tokens (as counted by `count_tokens`, else about one per word)."""
    rng = np.random.default_rng([seed, start_index, 7])
    specs = []
    for offset in range(num):
        images = planner.images_for_request(images_per_request) if planner and images_per_request else []
        specs.append(
            RequestSpec(
                index=start_index + offset,
                prompt=sized_prompt(rng, input_tokens, count_tokens),
                images=[img.data_url for img in images],
                image_sizes=[img.size_label for img in images],
                image_keys=[img.key for img in images],
                max_tokens=output_tokens,
            )
        )
    return specs


def load_token_counter(model_dir: Path | str) -> TokenCounter | None:
    """The model's own tokenizer when its folder is local; None otherwise (prompts are then sized by words)."""
    path = Path(model_dir)
    if not (path / "tokenizer.json").exists() and not (path / "tokenizer_config.json").exists():
        return None
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception:
        return None
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


# -- dataset JSONL ---------------------------------------------------------------------------------------------------


class DatasetRecord(StrictModel):
    """One line of a `--dataset` JSONL file."""

    prompt: str = Field(min_length=1)
    image_files: list[str] = Field(default_factory=list, description="paths relative to the JSONL, or URLs")
    output_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: object) -> object:
        # vLLM's custom_image lines say `image_files`; `images` is accepted as a shorter synonym.
        if isinstance(data, dict) and "images" in data and "image_files" not in data:
            data = dict(data)
            data["image_files"] = data.pop("images")
        return data


def _image_url(ref: str, base: Path, line_no: int, path: Path) -> tuple[str, str]:
    if ref.startswith(("http://", "https://", "data:")):
        return ref, "?"
    file = (base / ref) if not Path(ref).is_absolute() else Path(ref)
    if not file.is_file():
        raise ContractError(f"{path}:{line_no}: image_files: {ref!r} not found (looked at {file})")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:
            size = f"{img.width}x{img.height}"
    except (UnidentifiedImageError, OSError) as exc:
        raise ContractError(f"{path}:{line_no}: image_files: {ref!r} is not an image ({exc})") from exc
    mime = mimetypes.guess_type(file.name)[0] or "image/jpeg"
    return to_data_url(file.read_bytes(), mime), size


def load_dataset(path: Path | str, default_output_tokens: int, limit: int | None = None) -> list[RequestSpec]:
    """Read a JSONL dataset; ContractError names the file, line and field of the first problem."""
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{path}: dataset file not found")
    specs: list[RequestSpec] = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = DatasetRecord.model_validate(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ContractError(f"{path}:{line_no}: not valid JSON: {exc.msg}") from exc
        except ValidationError as exc:
            raise ContractError(format_validation_error(f"{path}:{line_no}", exc)) from exc
        images = [_image_url(ref, path.parent, line_no, path) for ref in record.image_files]
        specs.append(
            RequestSpec(
                index=len(specs),
                prompt=record.prompt,
                images=[url for url, _ in images],
                image_sizes=[size for _, size in images],
                image_keys=list(record.image_files),
                max_tokens=record.output_tokens or default_output_tokens,
            )
        )
        if limit is not None and len(specs) >= limit:
            break
    if not specs:
        raise ContractError(f"{path}: dataset has no requests")
    return specs


def cycle_to(specs: list[RequestSpec], num: int) -> list[RequestSpec]:
    """Repeat a dataset to `num` requests (indices renumbered)."""
    out = []
    for i in range(num):
        src = specs[i % len(specs)]
        out.append(RequestSpec(i, src.prompt, src.images, src.image_sizes, src.image_keys, src.max_tokens))
    return out
