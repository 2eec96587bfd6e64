"""Minimal streamed chat request used by e2e tests that only need to prove the server answers (stdlib only)."""

from __future__ import annotations

import base64
import io
import json
import urllib.request
from typing import Any


def noise_image(seed: int = 0, size: tuple[int, int] = (56, 56)):
    """Random pixels, `size` = (width, height); the same image `png_data_url` sends (PNG is lossless)."""
    import numpy as np
    from PIL import Image

    pixels = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype("uint8")
    return Image.fromarray(pixels)


def png_data_url(seed: int = 0, size: tuple[int, int] = (56, 56)) -> str:
    buf = io.BytesIO()
    noise_image(seed, size).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def stream_chat(base_url: str, model: str, content: list[dict[str, Any]], max_tokens: int = 8) -> dict[str, Any]:
    """POST a streamed chat completion; return {'chunks': [...], 'text': str, 'usage': {...}}."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    request = urllib.request.Request(
        f"{base_url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    chunks: list[dict[str, Any]] = []
    done = False
    with urllib.request.urlopen(request, timeout=120) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            chunks.append(json.loads(line[len("data: ") :]))
    text = "".join(
        (choice.get("delta") or {}).get("content") or "" for chunk in chunks for choice in chunk.get("choices", [])
    )
    usage = next((c["usage"] for c in reversed(chunks) if c.get("usage")), None)
    return {"chunks": chunks, "text": text, "usage": usage, "done": done}
