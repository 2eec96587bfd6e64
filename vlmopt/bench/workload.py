"""Request specs: what each benchmark request asks for (text, images, output length).

Two sources: synthetic (text sized to a token count in the served model's tokenizer, synthetic images from
images.py) or a user's JSONL dataset (one request per line, the shape of `vllm bench serve`'s `custom_image` dataset,
vllm/benchmarks/datasets/datasets.py `CustomImageDataset`).
"""

from __future__ import annotations

import json
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field, ValidationError, model_validator

from vlmopt.schemas.common import ContractError, StrictModel, format_validation_error

from .images import ImagePlanner, to_data_url

if TYPE_CHECKING:
    from .tokens import TokenCounter

# Plain words; random order keeps prompts distinct, so the prefix cache cannot share work between requests (the same
# reason vLLM's random datasets use random token ids). Their cost in tokens is measured in the served model's own
# tokenizer (PromptSizer), never assumed.
_WORD_TEXT = (
    "the a one two red green blue small large cat dog bird car tree house river road sky cloud sun moon street "
    "window door table chair image picture photo shows there is are of in on at with near under above left right "
    "top bottom color shape square circle line light shadow morning evening night day water field city people"
)
_WORDS = _WORD_TEXT.split()
WORDS_SOURCE = "words (no tokenizer: about one token per word assumed)"


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


class PromptSizer:
    """Random prompts of an exact number of tokens in the served model's tokenizer.

    `input_tokens` means what `vllm bench serve --random-input-len` means (vllm/benchmarks/datasets/datasets.py,
    RandomDataset): the prompt as the tokenizer alone encodes it, its own special tokens (BOS...) included; the chat
    template's tokens and the image tokens come on top. So the text gets `input_tokens - special_tokens` tokens.

    Each word's cost (first word, and later words with their leading space) is measured once with the counter, then
    prompts are assembled to the exact total. A local tokenizer re-counts every prompt and corrects it (cheap); a
    server's /tokenize is checked on sample prompts and re-counts every prompt only if the sum of word costs missed.
    Without a counter, prompts are one word per requested token: a guess that the per-point check will flag.
    """

    SAMPLE_TARGETS = (16, 64)

    def __init__(self, counter: TokenCounter | None, recount_each: bool | None = None) -> None:
        self.counter = counter
        self.source = counter.source if counter is not None else WORDS_SOURCE
        self.special_tokens = counter.special_tokens if counter is not None else 0
        self._first: dict[str, int] = {}
        self._next: dict[str, int] = {}
        if counter is None:
            self.recount_each = False
            return
        self._first = {word: counter.count(word) for word in _WORDS}
        self._next = {word: counter.count(" " + word) for word in _WORDS}
        self._filler = min(_WORDS, key=lambda word: (self._next[word], word))
        if recount_each is None:
            self.recount_each = False
            rng = np.random.default_rng(0)
            samples = [(target, self._assemble(rng, target)) for target in self.SAMPLE_TARGETS]
            self.recount_each = any(counter.count(text) != target for target, text in samples)
        else:
            self.recount_each = recount_each

    @property
    def exact(self) -> bool:
        return self.counter is not None

    def text_tokens(self, input_tokens: int) -> int:
        return max(input_tokens - self.special_tokens, 1)

    def prompt(self, rng: np.random.Generator, input_tokens: int) -> str:
        target = self.text_tokens(input_tokens)
        if self.counter is None:
            return " ".join(_WORDS[i] for i in rng.integers(len(_WORDS), size=target))
        text = self._assemble(rng, target)
        return self._recount(text, target) if self.recount_each else text

    def _assemble(self, rng: np.random.Generator, target: int) -> str:
        words: list[str] = []
        total = 0
        while total < target:
            costs = self._next if words else self._first
            remaining = target - total
            fitting = [word for word in _WORDS if 0 < costs[word] <= remaining]
            if not fitting:
                break
            word = fitting[int(rng.integers(len(fitting)))]
            words.append(word)
            total += costs[word]
        return " ".join(words)

    def _recount(self, text: str, target: int) -> str:
        """Trim or pad by whole words until the counter agrees (merges across words can move a count by one)."""
        assert self.counter is not None
        words = text.split()
        best, best_error = text, None
        for _ in range(8):
            candidate = " ".join(words)
            count = self.counter.count(candidate)
            if best_error is None or abs(count - target) < best_error:
                best, best_error = candidate, abs(count - target)
            if count == target:
                break
            if count > target and len(words) > 1:
                words.pop()
            else:
                words.append(self._filler)
        return best


def synthetic_requests(
    num: int,
    *,
    input_tokens: int,
    output_tokens: int,
    images_per_request: int,
    planner: ImagePlanner | None,
    seed: int = 0,
    sizer: PromptSizer | None = None,
    start_index: int = 0,
) -> list[RequestSpec]:
    """`num` requests of `input_tokens` prompt tokens, sized by `sizer` (PromptSizer: exact in the served model's
    tokenizer when it has one)."""
    sizer = sizer or PromptSizer(None)
    rng = np.random.default_rng([seed, start_index, 7])
    specs = []
    for offset in range(num):
        images = planner.images_for_request(images_per_request) if planner and images_per_request else []
        specs.append(
            RequestSpec(
                index=start_index + offset,
                prompt=sizer.prompt(rng, input_tokens),
                images=[img.data_url for img in images],
                image_sizes=[img.size_label for img in images],
                image_keys=[img.key for img in images],
                max_tokens=output_tokens,
            )
        )
    return specs


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
