"""Why does stage 3 not learn my task? Three measurements on a stage-2 export and a task's shards, in one process
(no Ray, no DeepSpeed), as in docs/recipe.md §5:

* ``features``: how much the frozen encoder's features differ between trials relative to their size (std across
  trials at a fixed token / mean token norm; the issue-16 collapse had 0.003), and whether they carry the class:
  logistic regression on the mean-pooled features and on all tokens' features (fixed layout), scored on test.
* ``train``: a single-process stand-in of stage 3 (same model, instruction layout, answer loss and constrained
  scoring as ``InstructStage``; plain AdamW, warm-up + cosine), printing one JSON line per evaluation with the
  val/test balanced accuracy and the share of the most frequent answer (1.0 = one answer for every trial);
  ``--mixup ALPHA`` mixes the GPT's EEG input and the answer loss between trials.
* ``read``: which reader of the GPT's EEG input (frozen) learns the class from the train split when trained as
  stage 3 trains: a linear map with weights per token, or attention pooling (the way the answer position reads
  EEG tokens), each scored on test (docs/recipe.md §20).

    python scripts/probe_task.py features --init EXPORT --shards SHARDS/Blink --task Blink
    python scripts/probe_task.py train --init EXPORT --shards SHARDS/Blink --task Blink --lr 1e-3 --steps 800

``EXPORT`` is a stage-2 export directory (``<workdir>/runs/<name>-pretrain/export``, fetched with
``neurolm s3 get``), ``SHARDS/<dataset>`` a preprocessed dataset with train/val/test splits (``neurolm
preprocess ... --workers 0``), ``--task`` a built-in task name or a task YAML file.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from neurolm.data.layout import instruction_layout
from neurolm.data.shards import read_shards
from neurolm.models.collapse import balanced_accuracy_of
from neurolm.models.generate import score_options
from neurolm.models.io import load_neurolm
from neurolm.task_spec import resolve_task
from neurolm.train.stages.instruct import drop_channels, task_tokens

EVAL_KEYS = ("x", "input_chans", "input_time", "input_mask", "prompt", "label")


def load_split(shards: str, split: str, tokens, eeg_max_len: int, evaluation: bool,
               trial_scale: str = "none") -> dict[str, np.ndarray]:
    table = read_shards(f"{shards}/{split}")
    batch = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    out = instruction_layout(batch, tokens, eeg_max_len, 72, evaluation)
    if trial_scale != "none":
        out["x"] = rescale_trials(out["x"], out["input_chans"], out["input_mask"], trial_scale == "center")
    return out


def rescale_trials(x: np.ndarray, chans: np.ndarray, mask: np.ndarray, center: bool) -> np.ndarray:
    """A stand-in for a per-trial preprocessing: each channel of each trial (all its real patches) divided by its
    RMS (after removing its mean with ``center``) and set to RMS 0.1, the recipe's unit."""
    x = x.copy()
    for i in range(len(x)):
        real = mask[i].astype(bool)
        for c in np.unique(chans[i][real]):
            sel = real & (chans[i] == c)
            v = x[i, sel] - (x[i, sel].mean() if center else 0.0)
            x[i, sel] = v / (np.sqrt((v ** 2).mean()) + 1e-8) * 0.1
    return x


def features(args, model, tokens) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    def encode(data):
        pooled, flat = [], []
        with torch.no_grad():
            for i in range(0, len(data["label"]), 64):
                b = {k: torch.as_tensor(data[k][i : i + 64]) for k in ("x", "input_chans", "input_time", "input_mask")}
                mask = b["input_mask"].bool()
                f = model.encode_eeg(b["x"], b["input_chans"], b["input_time"], mask) * mask[..., None]
                pooled.append((f.sum(1) / mask.sum(1, keepdim=True)).numpy())
                flat.append(f.flatten(1).numpy())
        return np.concatenate(pooled), np.concatenate(flat)

    train = load_split(args.shards, "train", tokens, args.eeg_max_len, True)
    test = load_split(args.shards, "test", tokens, args.eeg_max_len, True)
    (ptr, ftr), (pte, fte) = encode(train), encode(test)
    width = ptr.shape[1]
    tokens0 = ftr[:, :width]  # the first token of every trial (same channel and second)
    spread = float(tokens0.std(0).mean() / np.linalg.norm(tokens0, axis=1).mean())
    out: dict[str, float] = {"spread_across_trials": round(spread, 4)}
    for name, (a, b) in {"mean_pooled": (ptr, pte), "all_tokens": (ftr, fte)}.items():
        scaler = StandardScaler().fit(a)
        clf = LogisticRegression(C=0.1, max_iter=3000).fit(scaler.transform(a), train["label"])
        out[f"{name}_test_balanced_accuracy"] = round(
            float(balanced_accuracy_score(test["label"], clf.predict(scaler.transform(b)))), 3)
    print(json.dumps(out))


class AttentionRead(torch.nn.Module):
    """How the answer position reads EEG tokens, reduced to one step: a learnt query per head attends over the
    tokens (softmax over keys), the heads' values are concatenated and an MLP gives the class."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = torch.nn.Parameter(torch.randn(heads, width // heads) * 0.02)
        self.key, self.value = torch.nn.Linear(width, width), torch.nn.Linear(width, width)
        self.out = torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(width, 4 * width), torch.nn.GELU(),
                                       torch.nn.Linear(4 * width, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, width = x.shape
        k = self.key(x).view(B, N, self.heads, -1)
        v = self.value(x).view(B, N, self.heads, -1)
        a = (torch.einsum("bnhe,he->bhn", k, self.query) / k.shape[-1] ** 0.5).softmax(-1)
        return self.out(torch.einsum("bhn,bnhe->bhe", a, v).reshape(B, width))


class LinearRead(torch.nn.Module):
    """One weight per token and feature: a linear map of all tokens, each channel with its own weights."""

    def __init__(self, tokens: int, width: int, dropout: float) -> None:
        super().__init__()
        self.drop, self.linear = torch.nn.Dropout(dropout), torch.nn.Linear(tokens * width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(x.flatten(1)))


def read(args, model, tokens) -> None:
    """Which reader of the GPT's EEG input learns the task from the train split? The tokens as the GPT's first
    block sees them (encoder features + channel and position embeddings, LayerNorm'd), frozen and fixed-layout
    (trials of one shape); readers trained as stage 3 trains (AdamW, ``--lr``, ``--weight-decay``, ``--dropout``,
    ``--steps`` of ``--batch-size``, two-class tasks): a linear map with weights per token vs attention pooling
    with 1 and 4 heads. One JSON line per reader, seed and evaluation: train loss, test balanced accuracy, AUROC."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    def inputs(split):
        data = load_split(args.shards, split, tokens, args.eeg_max_len, True)
        real = data["input_mask"].astype(bool)
        if not (real == real[:1]).all() or not (data["input_chans"][:, real[0]] == data["input_chans"][:1, real[0]]).all():
            raise SystemExit(f"read: the {split} trials differ in layout; this probe needs one shape")
        out = []
        with torch.no_grad():
            for i in range(0, len(real), 64):
                b = {k: torch.as_tensor(data[k][i : i + 64]) for k in ("x", "input_chans", "input_time", "input_mask")}
                f = model.encode_eeg(b["x"], b["input_chans"], b["input_time"], b["input_mask"].bool())
                out.append(model.eeg_embeddings(f, b["input_chans"].long(), b["input_time"].long()))
        x = torch.cat(out)[:, : int(real[0].sum())]
        return torch.nn.functional.layer_norm(x, x.shape[-1:]), torch.as_tensor(data["label"]).long()

    model.eval()
    (xtr, ytr), (xte, yte) = inputs("train"), inputs("test")
    n, width = xtr.shape[1:]
    readers = {"linear": lambda: LinearRead(n, width, args.dropout),
               "attention_1_head": lambda: AttentionRead(width, 1, args.dropout),
               "attention_4_heads": lambda: AttentionRead(width, 4, args.dropout)}
    for name, build in readers.items():
        for seed in (args.seed, args.seed + 1):
            torch.manual_seed(seed)
            reader, rng = build(), np.random.default_rng(seed)
            opt = torch.optim.AdamW(reader.parameters(), lr=args.lr, weight_decay=args.weight_decay)
            for step in range(args.steps):
                idx = torch.as_tensor(rng.choice(len(ytr), args.batch_size, replace=False))
                loss = torch.nn.functional.cross_entropy(reader(xtr[idx]), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
                    reader.eval()
                    with torch.no_grad():
                        p = reader(xte).softmax(-1)[:, 1].numpy()
                        train_loss = float(torch.nn.functional.cross_entropy(reader(xtr), ytr))
                    reader.train()
                    print(json.dumps({"reader": name, "seed": seed, "step": step + 1, "train_loss": round(train_loss, 3),
                                      "test_balanced_accuracy": round(float(balanced_accuracy_score(yte, p > 0.5)), 3),
                                      "test_auroc": round(float(roc_auc_score(yte, p)), 3)}), flush=True)


def mixup_loss(model, b, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """Mixup on the encoder's features (the GPT's EEG input): every trial's features mixed with those of another
    trial of the batch (``lam`` and ``1 - lam``), the answer loss mixed the same way over the two answers. Trials
    of one task share a layout (same channels and seconds), which the mixing needs."""
    if not torch.equal(b["input_chans"], b["input_chans"][perm]) or not torch.equal(b["input_mask"], b["input_mask"][perm]):
        raise ValueError("mixup needs trials of one layout")
    encode = model.encode_eeg

    def mixed(*args, **kwargs):
        f = encode(*args, **kwargs)
        return lam * f + (1 - lam) * f[perm]

    model.encode_eeg = mixed
    try:  # the two answers' losses on the same mixed input (the head on supervised positions only)
        own = model(b["x"], b["input_chans"], b["input_time"], b["input_mask"], text=b["text"],
                    text_targets=b["text_targets"]).loss
        other = model(b["x"], b["input_chans"], b["input_time"], b["input_mask"], text=b["text"],
                      text_targets=b["text_targets"][perm]).loss
    finally:
        del model.encode_eeg
    return lam * own + (1 - lam) * other


def train(args, model, tokens) -> None:
    torch.manual_seed(args.seed)
    data = load_split(args.shards, "train", tokens, args.eeg_max_len, False, args.trial_scale)
    val = load_split(args.shards, "val", tokens, args.eeg_max_len, True, args.trial_scale)
    test = load_split(args.shards, "test", tokens, args.eeg_max_len, True, args.trial_scale)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": args.weight_decay, "scale": 1.0},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "scale": 1.0}]
    if args.train_encoder > 0:
        enc = list(model.encoder.parameters())
        model.encoder.requires_grad_(True)
        groups.append({"params": enc, "weight_decay": args.weight_decay, "scale": args.train_encoder})
        params = params + enc
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95))
    warm = max(1, int(args.warmup_ratio * args.steps))

    def lr_at(step: int) -> float:
        if step < warm:
            return args.lr * (step + 1) / warm
        q = (step - warm) / max(1, args.steps - warm)
        low = args.lr * args.min_lr_ratio
        return low + 0.5 * (args.lr - low) * (1 + math.cos(math.pi * q))

    def score(split):
        model.eval()
        k = len(tokens.options)
        confusion, nll = np.zeros((k, k)), []
        with torch.no_grad():
            for i in range(0, len(split["label"]), 64):
                b = {key: torch.as_tensor(split[key][i : i + 64]) for key in EVAL_KEYS}
                ll = score_options(model, b["x"], b["input_chans"], b["input_time"], b["input_mask"], b["prompt"],
                                   tokens.options)
                np.add.at(confusion, (b["label"].numpy(), ll.argmax(-1).numpy()), 1)
                nll.append(-ll.gather(1, b["label"].long()[:, None]).squeeze(1).numpy())
        model.train()
        return (round(balanced_accuracy_of(confusion), 3), round(float(confusion.sum(0).max() / confusion.sum()), 3),
                round(float(np.concatenate(nll).mean()), 4))

    rng = np.random.default_rng(args.seed)
    n = len(data["label"])
    order, pos, losses, t0 = rng.permutation(n), 0, [], time.perf_counter()
    for step in range(args.steps):
        if pos + args.batch_size > n:
            order, pos = rng.permutation(n), 0
        idx = order[pos : pos + args.batch_size]
        pos += args.batch_size
        b = {k: torch.as_tensor(v[idx]) for k, v in data.items()}
        if args.channel_dropout > 0:
            b["x"] = drop_channels(b["x"], b["input_chans"], b["input_mask"], args.channel_dropout)
        if args.noise_std > 0:  # white noise on every real patch, a fresh draw per step
            b["x"] = b["x"] + args.noise_std * torch.randn_like(b["x"]) * b["input_mask"][..., None].to(b["x"].dtype)
        for group in opt.param_groups:
            group["lr"] = lr_at(step) * group["scale"]
        if args.mixup > 0:
            loss = mixup_loss(model, b, float(rng.beta(args.mixup, args.mixup)), torch.as_tensor(rng.permutation(len(idx))))
        else:
            loss = model(b["x"], b["input_chans"], b["input_time"], b["input_mask"], text=b["text"],
                         text_targets=b["text_targets"]).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            (v, v_major, v_nll), (t, t_major, _) = score(val), score(test)
            print(json.dumps({"step": step + 1, "answer_loss": round(float(np.mean(losses[-args.eval_every:])), 4),
                              "val_balanced_accuracy": v, "val_majority_share": v_major, "val_nll": v_nll,
                              "test_balanced_accuracy": t, "test_majority_share": t_major,
                              "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["features", "train", "read"])
    parser.add_argument("--init", required=True, help="stage-2 export directory")
    parser.add_argument("--shards", required=True, help="a dataset's shard directory (train/val/test inside)")
    parser.add_argument("--task", required=True, help="built-in task name or task YAML file")
    parser.add_argument("--eeg-max-len", type=int, default=48)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--min-lr-ratio", type=float, default=0.1)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trial-scale", choices=["none", "scale", "center"], default="none",
                        help="every split's trials rescaled per trial and channel (a preprocessing stand-in)")
    parser.add_argument("--channel-dropout", type=float, default=0.0,
                        help="stage 3's augment_channel_dropout: each sample's channels silenced with this probability")
    parser.add_argument("--noise-std", type=float, default=0.0,
                        help="white noise of this std (signal units: 0.1 = a median trial's std after normalize=dataset) "
                             "added to the training trials at every step")
    parser.add_argument("--train-encoder", type=float, default=0.0, metavar="LR_SCALE",
                        help="also train the (official: frozen) encoder, at LR_SCALE x the lr; 0 = frozen")
    parser.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA",
                        help="mixup of the GPT's EEG input and the answer loss between trials, lambda ~ Beta(ALPHA, ALPHA); 0 = off")
    parser.add_argument("--channel-embed-std", type=float, default=None, metavar="STD",
                        help="re-draw the GPT's channel embedding at N(0, STD) before anything (official NeuroLM 1.0; "
                             "scaled_new_embedding_init 0.02)")
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="the GPT's dropout (blocks and embeddings) while training; the export's is 0")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokens = task_tokens(resolve_task(args.task))
    model = load_neurolm(args.init, **({"gpt": {"dropout": args.dropout}} if args.dropout else {}))
    if args.channel_embed_std is not None:
        torch.manual_seed(args.seed)
        torch.nn.init.normal_(model.channel_embed.weight, std=args.channel_embed_std)
    {"features": features, "train": train, "read": read}[args.what](args, model, tokens)


if __name__ == "__main__":
    main()
