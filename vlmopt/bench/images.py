"""Synthetic request images: distinct per slot unless a reuse fraction asks for repeats.

Why distinct by default: vLLM caches processed images (mm processor cache) and encoder outputs, so a repeated image
makes TTFT look falsely low. `--image-reuse R` repeats a fraction R of the image slots on purpose, to measure that
cache effect. Warm-up images come from their own namespace, so a warm-up request can never prime the cache for a
measured one.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
from dataclasses import dataclass
from typing import get_args

import numpy as np

from vlmopt.schemas.profile import ImageStyle

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
MAX_SIDE = 8192
# photo: a gradient plus mild noise, JPEG quality 90, compresses like a photo (realistic wire and decode cost).
# noise: every pixel uniform random, JPEG quality 75, as `vllm bench serve`'s random-mm dataset makes them
# (vllm/benchmarks/datasets: generate_synthetic_image, then PIL's default JPEG quality): the worst case for size
# and decoding, and the choice for comparing numbers with vLLM's tool.
IMAGE_STYLES: tuple[str, ...] = get_args(ImageStyle)


def check_image_style(style: str, what: str = "image style") -> str:
    """`style` if it is one of IMAGE_STYLES; else ValueError naming `what` (an option name, say)."""
    if style not in IMAGE_STYLES:
        raise ValueError(f"{what} {style!r} is not one of {', '.join(IMAGE_STYLES)}")
    return style


@dataclass(frozen=True)
class SyntheticImage:
    key: str  # stable identity: equal keys mean byte-identical images
    width: int
    height: int
    data_url: str

    @property
    def size_label(self) -> str:
        return f"{self.width}x{self.height}"


def parse_image_sizes(text: str) -> list[tuple[int, int]]:
    """'56x56,112x84' -> [(56, 56), (112, 84)] as (width, height); ValueError names the bad item."""
    sizes: list[tuple[int, int]] = []
    for item in text.split(","):
        match = _SIZE_RE.match(item)
        if not match:
            raise ValueError(f"image size {item.strip()!r} is not WIDTHxHEIGHT (e.g. 448x448)")
        width, height = int(match.group(1)), int(match.group(2))
        if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
            raise ValueError(f"image size {item.strip()!r} must have sides between 1 and {MAX_SIDE}")
        sizes.append((width, height))
    if not sizes:
        raise ValueError("no image size given")
    return sizes


def _seed_for(seed: int, namespace: str, index: int) -> int:
    digest = hashlib.blake2b(f"{seed}/{namespace}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def render_image(width: int, height: int, seed: int, namespace: str, index: int, fmt: str = "JPEG",
                 style: str = "photo") -> bytes:
    """A JPEG that differs per (namespace, index); `style` as in IMAGE_STYLES."""
    from PIL import Image

    rng = np.random.default_rng(_seed_for(seed, namespace, index))
    if style == "noise":
        buffer = io.BytesIO()
        noise = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        Image.fromarray(noise, "RGB").save(buffer, format=fmt, quality=75)
        return buffer.getvalue()
    check_image_style(style)
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    base = rng.uniform(0, 255, size=3).astype(np.float32)
    tilt = rng.uniform(-128, 128, size=(2, 3)).astype(np.float32)
    pixels = base + xs[..., None] * tilt[0] + ys[..., None] * tilt[1]
    pixels += rng.normal(0, 12, size=(height, width, 3)).astype(np.float32)
    array = np.clip(pixels, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, format=fmt, quality=90)
    return buffer.getvalue()


def to_data_url(payload: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


class ImagePlanner:
    """Assigns an image to every slot of every request, reproducibly for a seed.

    Slot s gets size `sizes[s % len(sizes)]`. A slot repeats an earlier image of the same size with probability
    `reuse`, so the measured share of repeated slots converges to `reuse`; the first slot of each size is always
    fresh. Rendering is cached per key, so repeats cost nothing and keep identical bytes.
    """

    def __init__(self, sizes: list[tuple[int, int]], reuse: float = 0.0, seed: int = 0, namespace: str = "m",
                 style: str = "photo"):
        check_image_style(style)
        if not sizes:
            raise ValueError("at least one image size is needed")
        if not 0.0 <= reuse <= 1.0:
            raise ValueError(f"image reuse must be within [0, 1], got {reuse}")
        self.sizes = list(sizes)
        self.reuse = reuse
        self.seed = seed
        self.namespace = namespace
        self.style = style
        self._rng = np.random.default_rng(_seed_for(seed, namespace + "/reuse", 0))
        self._slot = 0
        self._fresh = 0
        self._seen: dict[tuple[int, int], list[str]] = {}
        self._cache: dict[str, SyntheticImage] = {}
        self.reused_slots = 0

    def next_image(self) -> SyntheticImage:
        width, height = self.sizes[self._slot % len(self.sizes)]
        self._slot += 1
        seen = self._seen.setdefault((width, height), [])
        if seen and self.reuse > 0 and self._rng.random() < self.reuse:
            key = seen[int(self._rng.integers(len(seen)))]
            self.reused_slots += 1
            return self._cache[key]
        key = f"{self.namespace}:{self.seed}:{self._fresh}:{width}x{height}"
        payload = render_image(width, height, self.seed, self.namespace, self._fresh, style=self.style)
        self._fresh += 1
        image = SyntheticImage(key=key, width=width, height=height, data_url=to_data_url(payload))
        self._cache[key] = image
        seen.append(key)
        return image

    def images_for_request(self, count: int) -> list[SyntheticImage]:
        return [self.next_image() for _ in range(count)]


def warmup_planner(sizes: list[tuple[int, int]], seed: int, style: str = "photo") -> ImagePlanner:
    """Warm-up images live in their own namespace and never repeat, so they cannot prime measured requests."""
    return ImagePlanner(sizes, reuse=0.0, seed=seed, namespace="warmup", style=style)
