"""Text corpus for the language-modelling loss: text files → GPT-2 token shards (uint16) on object storage.

As nanoGPT's OpenWebText ``train.bin`` (docs/reference.md §1.4), documents are GPT-2 BPE-encoded and joined with
``<|endoftext|>``; the token stream is cut into fixed windows of ``window`` tokens and written as Parquet rows
(column ``tokens``, a fixed-shape uint16 tensor) so Ray Data streams them to the workers like the EEG shards::

    neurolm text prepare --input corpus/*.txt --output s3://bucket/text
    neurolm text prepare --builtin python-docs --output .cache/text    # offline English text shipped with Python
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import io
import json
import sys
from collections.abc import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from neurolm import storage
from neurolm.vocab import EOT_ID


def builtin_documents(name: str) -> list[str]:
    """Offline English text: ``python-docs`` = the topic pages of Python's own documentation (pydoc_data)."""
    if name != "python-docs":
        raise ValueError(f"unknown builtin corpus {name!r}; available: python-docs")
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def tokenize_documents(docs: Iterable[str], encode: Callable[[str], list[int]]) -> np.ndarray:
    """Encode and join documents, each followed by ``<|endoftext|>``, into one uint16 stream."""
    parts = []
    for doc in docs:
        ids = encode(doc)
        ids.append(EOT_ID)
        parts.append(np.asarray(ids, dtype=np.uint16))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def windows(stream: np.ndarray, window: int) -> np.ndarray:
    """Non-overlapping ``(N, window)`` windows of the stream (the remainder is dropped)."""
    n = len(stream) // window
    return stream[: n * window].reshape(n, window)


def text_windows(batch: dict[str, np.ndarray], seq_len: int) -> dict[str, np.ndarray]:
    """Ray Data step: crop stored windows to ``seq_len + 1`` tokens (inputs + next-token targets), as int64."""
    tokens = np.asarray(batch["tokens"])
    if tokens.shape[1] < seq_len + 1:
        raise ValueError(
            f"text shards hold {tokens.shape[1]}-token windows; seq_len {seq_len} needs {seq_len + 1}"
        )
    return {"tokens": tokens[:, : seq_len + 1].astype(np.int64)}


def write_token_shards(
    tokens: np.ndarray, output: str, rows_per_shard: int = 4096, val_fraction: float = 0.05
) -> dict[str, int]:
    """Write ``(N, W)`` token windows as ``<output>/{train,val}/part-*.parquet``; the last rows go to val."""
    n_val = int(round(len(tokens) * val_fraction)) if len(tokens) > 1 else 0
    counts = {}
    for split, rows in (("train", tokens[: len(tokens) - n_val]), ("val", tokens[len(tokens) - n_val :])):
        counts[split] = len(rows)
        for i, start in enumerate(range(0, len(rows), rows_per_shard)):
            chunk = np.ascontiguousarray(rows[start : start + rows_per_shard])
            table = pa.table({"tokens": pa.FixedShapeTensorArray.from_numpy_ndarray(chunk)})
            sink = io.BytesIO()
            pq.write_table(table, sink, compression="zstd")
            # Whole (a temp file and a rename): a run may be reading, memory-mapped, the shards this replaces.
            storage.write_bytes(storage.join(output, split, f"part-{i:05d}.parquet"), sink.getvalue())
    return counts


def prepare(
    inputs: list[str],
    output: str,
    window: int = 1025,
    builtin: str | None = None,
    val_fraction: float = 0.05,
    tokenizer: str | None = None,
) -> dict:
    """Tokenize text files (or a builtin corpus) into token shards; returns a summary also written as JSON."""
    from neurolm.data.bpe import load_gpt2_tokenizer

    files = sorted({f for pattern in inputs for f in glob.glob(pattern)})
    if inputs and not files:
        raise FileNotFoundError(f"no text files match {inputs}")
    docs = builtin_documents(builtin) if builtin else []
    for f in files:
        with open(f, encoding="utf-8", errors="strict") as fh:
            docs.append(fh.read())
    if not docs:
        raise ValueError("no input text: give --input files or --builtin python-docs")
    bpe = load_gpt2_tokenizer(tokenizer)
    stream = tokenize_documents(docs, bpe.encode)
    rows = windows(stream, window)
    if len(rows) == 0:
        raise ValueError(f"the corpus has {len(stream)} tokens: fewer than one {window}-token window")
    counts = write_token_shards(rows, output, val_fraction=val_fraction)
    summary = {
        "documents": len(docs),
        "tokens": int(len(stream)),
        "window": window,
        "rows": counts,
        "sha256": hashlib.sha256(stream.tobytes()).hexdigest(),
        "sources": files or [builtin],
    }
    storage.write_text(storage.join(output, "_manifest.json"), json.dumps(summary, indent=1))
    return summary


def cli(argv: list[str] | None = None) -> int:
    """``neurolm text prepare --input FILES... | --builtin python-docs --output URI``."""
    parser = argparse.ArgumentParser(
        prog="neurolm text", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("prepare", help="tokenize text files into GPT-2 token shards")
    p.add_argument("--input", nargs="*", default=[], help="text files or glob patterns")
    p.add_argument("--builtin", choices=["python-docs"], default=None, help="an offline corpus")
    p.add_argument("--output", required=True, help="local directory or s3://bucket/prefix")
    p.add_argument("--window", type=int, default=1025, help="tokens per stored window (block 1024 + 1)")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--tokenizer", default=None, help="HF tokenizer dir (default: bundled GPT-2 BPE files)")
    args = parser.parse_args(argv)
    summary = prepare(args.input, args.output, args.window, args.builtin, args.val_fraction, args.tokenizer)
    json.dump(summary, sys.stdout, indent=1)
    print()
    return 0
