"""Prompts sized in real tokenizers: the tiny LLaVA's byte-level BPE (through transformers), and a BPE with a small
vocabulary that splits the benchmark's words into several pieces (through transformers, and through the `tokenizers`
library alone, as the base install without transformers would), where "one word is one token" is far off."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from vlmopt.bench.tokens import LocalTokenCounter, local_token_counter
from vlmopt.bench.workload import PromptSizer

TARGETS = (1, 8, 32, 33, 100, 400)


def _assert_exact(counter: LocalTokenCounter) -> PromptSizer:
    sizer = PromptSizer(counter)
    rng = np.random.default_rng(0)
    for target in TARGETS:
        prompt = sizer.prompt(rng, target)
        assert counter.count(prompt) == max(target - counter.special_tokens, 1), (target, prompt)
    return sizer


def test_tiny_llava_tokenizer(tiny_model_dir: Path) -> None:
    counter = local_token_counter(tiny_model_dir)
    assert counter is not None and not counter.is_fast_library
    assert counter.source == f"tokenizer of {tiny_model_dir}"
    _assert_exact(counter)


def test_small_vocabulary_bpe_splits_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokenizers = pytest.importorskip("tokenizers", reason="training a BPE needs the tokenizers library")
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    tok = tokenizers.Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["a quick brown fox jumps over the lazy dog"] * 20, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    folder = tmp_path / "bpe"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))

    through_transformers = local_token_counter(folder)
    assert through_transformers is not None and not through_transformers.is_fast_library
    monkeypatch.setitem(sys.modules, "transformers", None)  # the base install: no transformers
    counter = local_token_counter(folder)
    assert counter is not None and counter.is_fast_library
    for counted in (counter, through_transformers):
        assert counted.special_tokens == 1  # the BOS its post-processor adds, as vllm bench serve subtracts it
        sizer = _assert_exact(counted)
    assert counter.count("the lazy dog") == through_transformers.count("the lazy dog")
    words_guess = PromptSizer(None).prompt(np.random.default_rng(1), 32)
    assert counter.count(words_guess) > 2 * 32  # the old "one word ~ one token" guess: more than twice too long
    assert sizer.text_tokens(32) == 31
