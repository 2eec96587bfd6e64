"""Synthetic images and request specs: distinct unless reused, warm-up separate, prompts sized, datasets checked."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmopt.bench.images import ImagePlanner, parse_image_sizes, render_image, warmup_planner
from vlmopt.bench.workload import PromptSizer, load_dataset, synthetic_requests
from vlmopt.schemas import ContractError


def test_parse_image_sizes() -> None:
    assert parse_image_sizes("56x56, 112X84") == [(56, 56), (112, 84)]
    for bad in ("56", "0x5", "axb", "99999x1"):
        with pytest.raises(ValueError):
            parse_image_sizes(bad)


def test_rendered_image_has_the_size_and_is_deterministic() -> None:
    payload = render_image(64, 48, seed=0, namespace="m", index=1)
    assert Image.open(io.BytesIO(payload)).size == (64, 48)
    assert payload == render_image(64, 48, seed=0, namespace="m", index=1)
    assert payload != render_image(64, 48, seed=0, namespace="m", index=2)


def test_noise_style_is_random_pixels_like_vllms_random_mm() -> None:
    import numpy as np

    photo = render_image(56, 56, seed=0, namespace="m", index=1)
    noise = render_image(56, 56, seed=0, namespace="m", index=1, style="noise")
    assert noise == render_image(56, 56, seed=0, namespace="m", index=1, style="noise")
    pixels = np.asarray(Image.open(io.BytesIO(noise)), dtype=np.float32)
    assert pixels.shape == (56, 56, 3)
    # iid uniform pixels survive JPEG as high-frequency content: neighbours barely correlate, unlike the gradient,
    # and the file is larger even at quality 75 against the photo's 90
    smooth = np.asarray(Image.open(io.BytesIO(photo)), dtype=np.float32)
    neighbour_diff = float(np.abs(np.diff(pixels, axis=1)).mean())
    assert neighbour_diff > 40 > float(np.abs(np.diff(smooth, axis=1)).mean())
    assert len(noise) > len(photo)
    planner = ImagePlanner([(56, 56)], seed=3, style="noise")
    assert planner.next_image().data_url != planner.next_image().data_url
    with pytest.raises(ValueError, match="image style"):
        ImagePlanner([(56, 56)], style="cartoon")


def test_no_reuse_means_every_image_distinct() -> None:
    planner = ImagePlanner([(56, 56), (80, 60)], reuse=0.0, seed=1)
    images = [planner.next_image() for _ in range(40)]
    assert len({img.data_url for img in images}) == 40
    assert [img.size_label for img in images[:3]] == ["56x56", "80x60", "56x56"]


def test_reuse_fraction_is_respected_and_reproducible() -> None:
    def keys(seed: int) -> list[str]:
        planner = ImagePlanner([(32, 32)], reuse=0.9, seed=seed)
        return [planner.next_image().key for _ in range(400)]

    first = keys(3)
    repeated = len(first) - len(set(first))
    assert 0.85 < repeated / len(first) < 0.95
    assert first == keys(3)


def test_warmup_images_never_equal_measured_ones() -> None:
    measured = ImagePlanner([(32, 32)], seed=0)
    warm = warmup_planner([(32, 32)], seed=0)
    assert {measured.next_image().data_url for _ in range(5)}.isdisjoint(
        {warm.next_image().data_url for _ in range(5)}
    )


class TwoPerWord:
    """A fake tokenizer: two tokens per word, one BOS added on its own."""

    source = "fake tokenizer"
    special_tokens = 1

    def __init__(self) -> None:
        self.calls = 0

    def count(self, text: str) -> int:
        self.calls += 1
        return 2 * len(text.split())


def test_prompt_sized_by_token_counter() -> None:
    counter = TwoPerWord()
    sizer = PromptSizer(counter)
    specs = synthetic_requests(3, input_tokens=21, output_tokens=7, images_per_request=2,
                               planner=ImagePlanner([(32, 32)]), sizer=sizer)
    # 21 requested = 1 BOS + 20 text tokens, as vllm bench serve's --random-input-len counts them
    assert all(counter.count(s.prompt) == 20 and s.max_tokens == 7 and s.num_images == 2 for s in specs)
    assert len({s.prompt for s in specs}) == 3  # distinct prompts: no accidental prefix-cache sharing
    assert not sizer.recount_each  # word costs add up for this tokenizer: no counting per prompt


def test_prompt_without_counter_is_one_word_per_token() -> None:
    sizer = PromptSizer(None)
    assert not sizer.exact and "words" in sizer.source
    (spec,) = synthetic_requests(1, input_tokens=12, output_tokens=1, images_per_request=0, planner=None, sizer=sizer)
    assert len(spec.prompt.split()) == 12


def test_prompt_recounted_when_word_costs_do_not_add_up() -> None:
    class Merging:
        """One token per word, but a word right after "the" costs two: costs depend on the neighbour."""

        source = "merging tokenizer"
        special_tokens = 0

        def count(self, text: str) -> int:
            words = text.split()
            return len(words) + sum(1 for before in words[:-1] if before == "the")

    sizer = PromptSizer(Merging())
    assert sizer.recount_each
    for target in (5, 17, 40):
        assert Merging().count(sizer.prompt(np.random.default_rng(target), target)) == target


def test_dataset_jsonl(tmp_path: Path) -> None:
    Image.new("RGB", (40, 30), "red").save(tmp_path / "a.png")
    lines = [{"prompt": "what is this?", "image_files": ["a.png"], "output_tokens": 5},
             {"prompt": "no image"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    specs = load_dataset(tmp_path / "d.jsonl", default_output_tokens=9)
    assert specs[0].image_sizes == ["40x30"] and specs[0].images[0].startswith("data:image/png;base64,")
    assert (specs[0].max_tokens, specs[1].max_tokens, specs[1].num_images) == (5, 9, 0)


@pytest.mark.parametrize(
    ("line", "words"),
    [('{"prompt": "x", "image_files": ["missing.png"]}', "missing.png"),
     ('{"prompt": ""}', "prompt"),
     ('{"prompt": "x", "colour": 1}', "colour"),
     ("{not json", "not valid JSON")],
)
def test_dataset_errors_name_line_and_field(tmp_path: Path, line: str, words: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "fine"}\n' + line + "\n")
    with pytest.raises(ContractError, match=words) as err:
        load_dataset(path, 4)
    assert ":2" in str(err.value)
