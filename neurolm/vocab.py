"""GPT-2 vocabulary ids that NeuroLM relies on (docs/reference.md §4.1), in one place.

The text side of NeuroLM is GPT-2's BPE (50257 ids, ``<|endoftext|>`` last); the token embedding is enlarged
to 50304 rows, the first new row being NeuroLM's ``[SEP]`` between EEG and text; EEG code ``c`` is output
column ``50304 + c``.
"""

from __future__ import annotations

__all__ = ["EOT_ID", "SEP_ID", "EOT_TEXT", "GPT2_TEXT_VOCAB", "PADDED_TEXT_VOCAB"]

EOT_ID = 50256
"""GPT-2's ``<|endoftext|>``: ends every text, pads text rows, separates documents in text shards."""
SEP_ID = 50257
"""NeuroLM's ``[SEP]``: the first row added to ``wte``, between EEG and text (not a BPE vocabulary entry)."""
EOT_TEXT = "<|endoftext|>"
"""The literal text of :data:`EOT_ID`."""
GPT2_TEXT_VOCAB = 50257
"""GPT-2's vocabulary size; generation picks among these logits only."""
PADDED_TEXT_VOCAB = 50304
"""Rows of the enlarged token embedding (GPT-2's 50257 padded to a multiple of 64)."""
