"""GPT-2 BPE offline: the bundled original vocabulary, and Hugging Face tokenizer directories."""

from __future__ import annotations

import os

import pytest

from neurolm.data.bpe import EOT_ID, SEP_ID, bundled_vocabulary_dir, load_gpt2_tokenizer


def test_bundled_vocabulary_is_gpt2() -> None:
    bpe = load_gpt2_tokenizer()
    assert bpe.encode("Hello world") == [15496, 995]
    assert bpe.encode(" Answer: Yes <|endoftext|>") == [23998, 25, 3363, 220, EOT_ID]
    assert bpe.decode([15496, 995, SEP_ID]) == "Hello world"  # [SEP] is not text


def test_vocabulary_and_tokenizer_directories(tmp_path) -> None:
    from transformers import GPT2Tokenizer

    d = bundled_vocabulary_dir()
    hf = GPT2Tokenizer(vocab=os.path.join(d, "encoder.json"), merges=os.path.join(d, "vocab.bpe"))
    hf.save_pretrained(tmp_path / "hf")
    text = "Question: Which emotion type does this EEG segment belong to? Answer: Neutral <|endoftext|>"
    assert load_gpt2_tokenizer(tmp_path / "hf").encode(text) == load_gpt2_tokenizer(d).encode(text)
    with pytest.raises(FileNotFoundError, match="encoder.json"):
        load_gpt2_tokenizer(tmp_path)
