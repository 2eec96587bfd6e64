"""Counting prompt tokens in the served model's own tokenizer: a local tokenizer (the model folder vlmopt serves, or
`--tokenizer`), or the server's own `POST /tokenize` (vLLM's tokenization API) when the model runs elsewhere.

Counts follow `vllm bench serve`'s random datasets (vllm/benchmarks/datasets/datasets.py, `RandomDataset.sample`):
text is counted without special tokens, and `special_tokens` is what the tokenizer adds on its own (BOS...,
`num_special_tokens_to_add()`), which `--random-input-len` includes. See docs/benchmark.md#prompt-sizing.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# A text whose count with and without special tokens tells how many the tokenizer adds itself.
_SPECIALS_PROBE = "hello"


class TokenCounter(Protocol):
    source: str  # how prompts were counted, recorded in the profile

    @property
    def special_tokens(self) -> int: ...

    def count(self, text: str) -> int:
        """Tokens of `text` alone, without special tokens."""
        ...


@dataclass
class LocalTokenCounter:
    """A tokenizer loaded from a local folder (transformers when installed, else the `tokenizers` library)."""

    tokenizer: Any
    source: str
    is_fast_library: bool = False  # a bare `tokenizers.Tokenizer`, not a transformers tokenizer
    _special: int | None = field(default=None, repr=False)

    def count(self, text: str) -> int:
        if self.is_fast_library:
            return len(self.tokenizer.encode(text, add_special_tokens=False).ids)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def special_tokens(self) -> int:
        if self._special is None:
            if self.is_fast_library:
                with_special = len(self.tokenizer.encode(_SPECIALS_PROBE, add_special_tokens=True).ids)
                self._special = max(with_special - self.count(_SPECIALS_PROBE), 0)
            else:
                self._special = int(self.tokenizer.num_special_tokens_to_add())
        return self._special


def local_token_counter(folder: Path | str, label: str | None = None) -> LocalTokenCounter | None:
    """The tokenizer in `folder`, offline; None when the folder has none or it cannot be loaded."""
    path = Path(folder)
    if not (path / "tokenizer.json").exists() and not (path / "tokenizer_config.json").exists():
        return None
    source = f"tokenizer of {label or path}"
    try:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # "no chat template"-style notices are not the user's concern here
        return LocalTokenCounter(AutoTokenizer.from_pretrained(str(path), local_files_only=True), source)
    except Exception:  # no transformers in the base install, or a folder it cannot read: tokenizer.json may do
        pass
    if not (path / "tokenizer.json").exists():
        return None
    try:
        from tokenizers import Tokenizer

        return LocalTokenCounter(Tokenizer.from_file(str(path / "tokenizer.json")), source, is_fast_library=True)
    except Exception:
        return None


class TokenizeUnavailable(RuntimeError):
    """The server has no usable /tokenize (not vLLM, disabled, or an error); the message says which."""


@dataclass
class ServerTokenCounter:
    """`POST {base_url}/tokenize` of a running vLLM server (TokenizeCompletionRequest: model, prompt,
    add_special_tokens; the answer's `count`). One HTTP call per count: used before a point's clock starts."""

    base_url: str
    model: str
    timeout_s: float = 10.0
    api_key: str | None = None
    _special: int | None = field(default=None, repr=False)

    @property
    def source(self) -> str:
        return f"server /tokenize at {self.base_url}"

    def _post(self, text: str, add_special_tokens: bool) -> int:
        body = json.dumps({"model": self.model, "prompt": text, "add_special_tokens": add_special_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.base_url.rstrip("/") + "/tokenize", data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                answer = json.loads(response.read().decode() or "{}")
        except urllib.error.HTTPError as exc:
            raise TokenizeUnavailable(f"/tokenize answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise TokenizeUnavailable(f"/tokenize failed ({getattr(exc, 'reason', exc)})") from None
        count = answer.get("count") if isinstance(answer, dict) else None
        if not isinstance(count, int):
            tokens = answer.get("tokens") if isinstance(answer, dict) else None
            if not isinstance(tokens, list):
                raise TokenizeUnavailable("/tokenize answered without a token count")
            count = len(tokens)
        return count

    def count(self, text: str) -> int:
        return self._post(text, add_special_tokens=False)

    @property
    def special_tokens(self) -> int:
        if self._special is None:
            self._special = max(self._post(_SPECIALS_PROBE, True) - self._post(_SPECIALS_PROBE, False), 0)
        return self._special


def server_token_counter(base_url: str, model: str, timeout_s: float = 10.0) -> ServerTokenCounter | None:
    """The server's /tokenize when it answers a probe; None otherwise (e.g. a server that is not vLLM)."""
    import os

    from .client import API_KEY_ENV_VARS

    key = next((os.environ[v] for v in API_KEY_ENV_VARS if os.environ.get(v)), None)
    counter = ServerTokenCounter(base_url, model, timeout_s, key)
    try:
        counter.special_tokens  # noqa: B018 - the probe: two calls, cached
    except TokenizeUnavailable:
        return None
    return counter


def select_token_counter(*, tokenizer: Path | None = None, tokenizer_label: str | None = None,
                         model_path: Path | None = None, model_label: str | None = None,
                         endpoint: str | None = None, served_name: str | None = None) -> TokenCounter | None:
    """The served model's own tokenizer, in this order: the one the user named (`--tokenizer`), the folder of the
    model vlmopt serves, the server's /tokenize, the served name as a hub id (from the hub cache). None: no way to
    count (prompts are then sized by words and the per-point check flags the difference)."""
    if tokenizer is not None:
        return local_token_counter(tokenizer, tokenizer_label)
    if model_path is not None:
        counter = local_token_counter(model_path, model_label)
        if counter is not None:
            return counter
    if endpoint:
        remote = server_token_counter(endpoint, served_name or "")
        if remote is not None:
            return remote
        from vlmopt.hub import ModelNotFound, looks_like_hub_id, resolve_model

        if served_name and looks_like_hub_id(served_name):
            try:
                ref = resolve_model(served_name, what="--model", files="tokenizer")
            except ModelNotFound:
                return None
            return local_token_counter(ref.path, ref.label)
    return None
