"""Rerun every computation recorded in an official golden file and measure how far we are from it.

A golden ``.pt`` (``shared/fixtures/official/``, documented tensor by tensor in its ``.json``) holds official
checkpoints at some size plus the official outputs on fixed inputs. :func:`compare_with_golden` infers every
size from the file, rebuilds our tokenizer and NeuroLM from those checkpoints, rebuilds the batches from the
raw samples with :mod:`neurolm.data.layout`, reruns each stage and returns ``{output name: max abs error}``.
Integer, bool and string outputs report the number of mismatching entries (0 = exact). Logits are compared
through the recorded summaries the file's ``comparison_advice`` names (log-sum-exp over all columns, the EEG
code columns, the first 64 text columns, probed columns, and argmax where the top-2 gap exceeds 1e-4); the
column sum and sum of squares are reported as relative errors (``… (relative)``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from neurolm.channels import channel_indices
from neurolm.data.bpe import load_gpt2_tokenizer
from neurolm.data.layout import layout_batch, layout_instruction_batch
from neurolm.data.tasks import get_task, tokenize_task
from neurolm.models.generate import generate, parse_answer
from neurolm.models.masks import key_padding_mask, official_generation_mask, stair_mask
from neurolm.models.neurolm import NeuroLM, next_code_targets, tokens_per_second
from neurolm.models.official import import_official_lm, import_official_vq
from neurolm.models.tokenizer import NeuralTokenizer

__all__ = ["compare_with_golden"]



class _Recorder:
    """Errors of one comparison run, keyed by golden tensor path."""

    def __init__(self) -> None:
        self.errors: dict[str, float] = {}

    def __call__(self, name: str, ours: Any, golden: Any) -> None:
        if isinstance(golden, str | list) and not isinstance(golden, torch.Tensor):
            ours_l, gold_l = (ours, golden) if isinstance(golden, list) else ([ours], [golden])
            self.errors[name] = float(sum(a != b for a, b in zip(ours_l, gold_l, strict=False))
                                      + abs(len(ours_l) - len(gold_l)))
            return
        a = torch.as_tensor(np.asarray(ours) if isinstance(ours, np.ndarray) else ours).detach().cpu()
        b = torch.as_tensor(golden).detach().cpu()
        if a.numel() == b.numel() and a.shape != b.shape:
            a = a.reshape(b.shape)
        if a.shape != b.shape:
            self.errors[name] = float("inf")
        elif b.dtype.is_floating_point:
            self.errors[name] = float((a.double() - b.double()).abs().max()) if b.numel() else 0.0
        else:
            self.errors[name] = float((a.long() != b.long()).sum())


def _capture(modules: Mapping[str, nn.Module], pre: frozenset[str] = frozenset()) -> tuple[dict, list]:
    """Forward hooks recording each module's output (or first input, for names in ``pre``)."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in modules.items():
        if name in pre:
            handles.append(module.register_forward_pre_hook(
                lambda _m, args, n=name: seen.__setitem__(n, args[0].detach())))
        else:
            handles.append(module.register_forward_hook(
                lambda _m, _a, out, n=name: seen.__setitem__(n, out.detach() if torch.is_tensor(out) else out)))
    return seen, handles


def _raw_batch(samples: list[Mapping[str, Any]]) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Official loaders compute ``FloatTensor(X / 100)``: divide in float64, then cast."""
    signals = [(s["X_uV"].double().numpy() / 100).astype(np.float32) for s in samples]
    chans = [channel_indices(s["ch_names"]) for s in samples]
    labels = [int(s.get("y", -1)) for s in samples]
    return signals, chans, labels


def _tensors(batch: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}


def _compare_logits(rec: _Recorder, prefix: str, logits: torch.Tensor, gold: Mapping[str, torch.Tensor],
                    vocab: int) -> None:
    rec(f"{prefix}/shape", torch.tensor(logits.shape), gold["shape"])
    rec(f"{prefix}/logsumexp_f64", logits.double().logsumexp(dim=-1), gold["logsumexp_f64"])
    # Sums over ~50k columns accumulate fp32 rounding; they are reported as relative errors.
    for name, value in (("sum_f64", logits.double().sum(dim=-1)), ("sumsq_f64", logits.double().pow(2).sum(dim=-1))):
        if name in gold:
            rel = (value - gold[name]).abs() / gold[name].abs().clamp(min=1.0)
            rec.errors[f"{prefix}/{name} (relative)"] = float(rel.max())
    rec(f"{prefix}/max", logits.max(dim=-1).values, gold["max"])
    top2 = logits.topk(2, dim=-1).values
    rec(f"{prefix}/top1_minus_top2", top2[..., 0] - top2[..., 1], gold["top1_minus_top2"])
    robust = gold["top1_minus_top2"] > 1e-4
    rec(f"{prefix}/argmax", logits.argmax(dim=-1)[robust], gold["argmax"][robust])
    rec(f"{prefix}/eeg_code_cols", logits[..., vocab:], gold["eeg_code_cols"])
    rec(f"{prefix}/text_cols_0_64", logits[..., :64], gold["text_cols_0_64"])
    rec(f"{prefix}/probe_vals", logits[..., gold["probe_cols"].long()], gold["probe_vals"])


def _lm_hooks(model: NeuroLM) -> dict[str, nn.Module]:
    mods: dict[str, nn.Module] = {"tokenizer_features": model.encoder,
                                  "after_encode_transform": model.feature_proj,
                                  "gpt_input_embeddings": model.gpt.drop, "ln_f_output": model.gpt.ln_f}
    mods.update({f"block_{i}_output": b for i, b in enumerate(model.gpt.blocks)})
    return mods


def _compare_features(rec: _Recorder, prefix: str, seen: Mapping[str, torch.Tensor],
                      gold: Mapping[str, torch.Tensor]) -> None:
    for name, value in gold.items():
        rec(f"{prefix}/features/{name}", seen[name], value)


def _compare_vq(rec: _Recorder, g: Mapping[str, Any], tok: NeuralTokenizer) -> None:
    gb, go = g["vq"]["batch"], g["vq"]["outputs"]
    L = gb["X"].shape[1]
    signals, chans, _ = _raw_batch(g["raw"]["vq_and_pretrain_samples"])
    built = layout_batch(signals, chans, L, targets=True)
    for ours, theirs in (("x", "X"), ("freq_target", "Y_freq"), ("raw_target", "Y_raw"),
                         ("input_chans", "input_chans"), ("input_time", "input_time"), ("input_mask", "input_mask")):
        rec(f"vq/batch/{theirs}", built[ours], gb[theirs])
    x, mask = gb["X"], gb["input_mask"].bool()
    chans_t, time_t = gb["input_chans"].long(), gb["input_time"].long()
    rec("vq/outputs/quantize_cluster_size_before", tok.quantizer.usage, go["quantize_cluster_size_before"])
    seen, handles = _capture({"encoder_features": tok.encoder,
                              "decoder_freq_features": tok.decoder_freq, "decoder_raw_features": tok.decoder_raw,
                              "quantizer": tok.quantizer})
    text = gb["text_tokens_for_domain_loss"].long()
    with torch.no_grad():
        out = tok(x, gb["Y_freq"], gb["Y_raw"], chans_t, time_t, mask, text_tokens=text, alpha=0.0)
        domain_eeg = tok.domain_classifier(out.features)
        domain_text = tok.domain_logits_text(text)
    for h in handles:
        h.remove()
    q = seen.pop("quantizer")
    seen["to_quantizer_features"] = tok.code_proj(seen["encoder_features"]).detach()
    for name in ("encoder_features", "to_quantizer_features", "decoder_freq_features", "decoder_raw_features"):
        rec(f"vq/outputs/{name}", seen[name], go[name])
    rec("vq/outputs/z_l2normalized", q.z, go["z_l2normalized"])
    rec("vq/outputs/quantize", q.z_q, go["quantize"])
    rec("vq/outputs/codebook_indices", q.indices, go["codebook_indices"])
    rec("vq/outputs/codebook_indices_flat", q.indices.reshape(-1), go["codebook_indices_flat"])
    dist = (q.z.reshape(-1, 1, q.z.shape[-1]) - tok.quantizer.codebook[None]).pow(2).sum(-1)  # (n, K)
    two = dist.topk(2, dim=-1, largest=False).values
    rec("vq/outputs/nearest_code_margin", two[:, 1] - two[:, 0], go["nearest_code_margin"])
    rec("vq/outputs/rec_freq", out.rec_freq, go["rec_freq"])
    rec("vq/outputs/rec_raw", out.rec_raw, go["rec_raw"])
    rec("vq/outputs/rec_freq_masked", out.rec_freq * mask[..., None], go["rec_freq_masked"])
    rec("vq/outputs/rec_raw_masked", out.rec_raw * mask[..., None], go["rec_raw_masked"])
    rec("vq/outputs/domain_logits_eeg", domain_eeg, go["domain_logits_eeg"])
    rec("vq/outputs/domain_logits_text", domain_text, go["domain_logits_text"])
    rec("vq/outputs/quantize_cluster_size_after_one_eval_forward", tok.quantizer.usage,
        go["quantize_cluster_size_after_one_eval_forward"])
    losses = dict(out.losses, train_objective=out.loss)
    for name, value in go["losses"].items():
        rec(f"vq/outputs/losses/{name}", losses[name], value)


def _compare_masks(rec: _Recorder, g: Mapping[str, Any]) -> None:
    lm = g["lm"]
    batches = {"pretrain": lm["pretrain"]["batch"], "instruct_train": lm["instruct_train"]["batch"],
               "instruct_eval": lm["instruct_eval"]["batch"]}
    text_len = {"pretrain": 0, "instruct_train": lm["instruct_train"]["batch"]["X_text"].shape[1],
                "instruct_eval": lm["instruct_eval"]["batch"]["X_text_prompt"].shape[1]}
    built = {k: stair_mask(b["input_time"], b["input_mask"], text_len[k]) for k, b in batches.items()}
    for k, b in batches.items():
        rec(f"lm/{k}/batch/gpt_mask", built[k], b["gpt_mask"])
    final = official_generation_mask(built["instruct_eval"], lm["instruct_eval"]["final_step_mask"].shape[-1]
                                     - built["instruct_eval"].shape[-1])
    rec("lm/instruct_eval/final_step_mask", final, lm["instruct_eval"]["final_step_mask"])
    for name, value in g["masks"].items():
        m = re.fullmatch(r"(pretrain|instruct_train|instruct_eval)_gpt_mask_sample(\d+)", name)
        if m:
            rec(f"masks/{name}", built[m.group(1)][int(m.group(2))], value)
        elif name == "encoder_key_padding_mask_vq_batch":
            mask = g["vq"]["batch"]["input_mask"].bool()
            rec(f"masks/{name}", key_padding_mask(mask).expand(-1, -1, mask.shape[1], -1), value)
        elif name.startswith("generate_mask_after_"):
            rec(f"masks/{name}", final, value)


def _run_lm(model: NeuroLM, **kwargs: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    seen, handles = _capture(_lm_hooks(model), pre=frozenset({"gpt_input_embeddings"}))
    with torch.no_grad():
        out = model(return_logits=True, **kwargs)
    for h in handles:
        h.remove()
    seen = {k: (v[0] if isinstance(v, tuple) else v) for k, v in seen.items()}
    return out, seen


def _compare_pretrain(rec: _Recorder, g: Mapping[str, Any], model: NeuroLM) -> None:
    gp = g["lm"]["pretrain"]
    gb = gp["batch"]
    signals, chans, _ = _raw_batch(g["raw"]["vq_and_pretrain_samples"])
    built = layout_batch(signals, chans, gb["X_eeg"].shape[1], targets=False)
    for ours, theirs in (("x", "X_eeg"), ("input_chans", "input_chans"), ("input_time", "input_time"),
                         ("input_mask", "input_mask"), ("num_chans", "num_chans"), ("num_tokens", "num_tokens")):
        rec(f"lm/pretrain/batch/{theirs}", built[ours], gb[theirs])
    b = dict(x_eeg=gb["X_eeg"], input_chans=gb["input_chans"].long(), input_time=gb["input_time"].long(),
             input_mask=gb["input_mask"].bool())
    out, seen = _run_lm(model, eeg_targets="next_code", **b)
    vocab = model.config.gpt.vocab_size
    with torch.no_grad():
        codes = model.code_head(seen["tokenizer_features"]) if model.code_head is not None else None
    if codes is not None:
        rec("lm/pretrain/codebook_indices", codes, gp["codebook_indices"])
        num_chans, num_tokens = tokens_per_second(b["input_time"], b["input_mask"])
        y = next_code_targets(codes, num_chans, num_tokens)
        rec("lm/pretrain/Y_eeg", torch.where(y < 0, -1 - vocab, y), gp["Y_eeg"])  # official fill: -1 - vocab
        rec("lm/pretrain/targets_in_gpt", out.targets, gp["targets_in_gpt"])
        rec("lm/pretrain/loss", out.loss, gp["loss"])
        rec("lm/pretrain/accuracy", out.accuracy, gp["accuracy"])
    _compare_features(rec, "lm/pretrain", seen, gp["features"])
    rec("lm/pretrain/x_eeg_plus_chan_embed", seen["after_encode_transform"] + model.channel_embed(b["input_chans"]),
        gp["x_eeg_plus_chan_embed"])
    _compare_logits(rec, "lm/pretrain/logits", out.logits, gp["logits"], vocab)
    targets = gp["targets_in_gpt"].long()
    ce = F.cross_entropy(out.logits.transpose(1, 2), targets, ignore_index=-1, reduction="none")
    rec("lm/pretrain/per_token_ce", ce, gp["per_token_ce"])
    if codes is None:  # without a VQ file, score the recorded targets
        with torch.no_grad():
            scored = model(eeg_targets=gp["Y_eeg"].clamp(min=-1), **b)
        rec("lm/pretrain/loss", scored.loss, gp["loss"])
        rec("lm/pretrain/accuracy", scored.accuracy, gp["accuracy"])


def _compare_text(rec: _Recorder, g: Mapping[str, Any], model: NeuroLM) -> None:
    gt = g["lm"]["text"]
    with torch.no_grad():
        out = model(text=gt["x_text"].long(), text_targets=gt["y_text"].long(), return_logits=True)
    _compare_logits(rec, "lm/text/logits", out.logits, gt["logits"], model.config.gpt.vocab_size)
    rec("lm/text/loss", out.loss, gt["loss"])
    rec("lm/text/accuracy", out.accuracy, gt["accuracy"])


def _compare_instruct(rec: _Recorder, g: Mapping[str, Any], model: NeuroLM, decode: Callable[[list[int]], str]) -> None:
    gi, ge = g["lm"]["instruct_train"], g["lm"]["instruct_eval"]
    task = get_task(str(g["config"]["instruct_loader"]))
    tt = tokenize_task(task, load_gpt2_tokenizer().encode)
    rec("lm/instruct_train/prompt_tokens", torch.tensor(tt.prompt), gi["prompt_tokens"])
    for label, ids in gi["answer_texts_tokens"].items():
        rec(f"lm/instruct_train/answer_texts_tokens/{label}", torch.tensor(tt.texts[int(label)]), ids)
    gb = gi["batch"]
    L, Lt = gb["X_eeg"].shape[1], gb["X_text"].shape[1]
    signals, chans, labels = _raw_batch(g["raw"]["instruct_samples"])
    built = layout_instruction_batch(signals, chans, labels, tt, eeg_max_len=L, text_max_len=Lt)
    for ours, theirs in (("x", "X_eeg"), ("text", "X_text"), ("text_targets", "Y_text"),
                         ("input_chans", "input_chans"), ("input_time", "input_time"), ("input_mask", "input_mask")):
        rec(f"lm/instruct_train/batch/{theirs}", built[ours], gb[theirs])
    b = dict(x_eeg=gb["X_eeg"], input_chans=gb["input_chans"].long(), input_time=gb["input_time"].long(),
             input_mask=gb["input_mask"].bool())
    out, seen = _run_lm(model, text=gb["X_text"].long(), text_targets=gb["Y_text"].long(), **b)
    start = model.text_start(b["input_time"], b["input_mask"])
    rec("lm/instruct_train/text_positions", start[0] + torch.arange(Lt), gi["text_positions"])
    rec("lm/instruct_train/targets_in_gpt", out.targets, gi["targets_in_gpt"])
    eeg_targets = out.targets[:, :L]
    ignore = -1 - model.config.gpt.vocab_size
    rec("lm/instruct_train/Y_eeg", torch.where(eeg_targets < 0, ignore, eeg_targets), gi["Y_eeg"])
    _compare_features(rec, "lm/instruct_train", seen, gi["features"])
    _compare_logits(rec, "lm/instruct_train/logits", out.logits, gi["logits"], model.config.gpt.vocab_size)
    ce = F.cross_entropy(out.logits.transpose(1, 2), gi["targets_in_gpt"].long(), ignore_index=-1, reduction="none")
    rec("lm/instruct_train/per_token_ce", ce, gi["per_token_ce"])
    rec("lm/instruct_train/loss", out.loss, gi["loss"])
    rec("lm/instruct_train/accuracy", out.accuracy, gi["accuracy"])

    eb = ge["batch"]
    evaluation = layout_instruction_batch(signals, chans, labels, tt, eeg_max_len=eb["X_eeg"].shape[1],
                                          evaluation=True)
    for ours, theirs in (("x", "X_eeg"), ("prompt", "X_text_prompt"), ("label", "label"),
                         ("input_chans", "input_chans"), ("input_time", "input_time"), ("input_mask", "input_mask")):
        rec(f"lm/instruct_eval/batch/{theirs}", evaluation[ours], eb[theirs])
    prompt = eb["X_text_prompt"].long()
    new = ge["generated_tokens"].shape[1] - prompt.shape[1]
    gen = generate(model, eb["X_eeg"], eb["input_chans"].long(), eb["input_time"].long(), eb["input_mask"].bool(),
                   prompt, max_new_tokens=new, use_cache=False, official_mask=True)
    rec("lm/instruct_eval/generated_tokens", gen.tokens, ge["generated_tokens"])
    steps = torch.stack(gen.step_logits)  # (steps, B, 50257)
    top = steps.topk(5, dim=-1)
    rec("lm/instruct_eval/step_top5_ids", top.indices, ge["step_top5_ids"])
    rec("lm/instruct_eval/step_top5_vals", top.values, ge["step_top5_vals"])
    rec("lm/instruct_eval/step_top1_minus_top2", top.values[..., 0] - top.values[..., 1], ge["step_top1_minus_top2"])
    decoded = [decode(row[1:].tolist()) for row in gen.tokens]
    if "decoded_without_sep" in ge:
        rec("lm/instruct_eval/decoded_without_sep", decoded, list(ge["decoded_without_sep"]))
    rec("lm/instruct_eval/parsed_pred", torch.tensor([parse_answer(t, task) for t in decoded]), ge["parsed_pred"])


def compare_with_golden(path: str | os.PathLike[str]) -> dict[str, float]:
    """Max absolute error per recorded output of the golden file at ``path`` (0 for exact int/str matches).

    Sizes (encoder/decoder/GPT layers, heads, widths, codebook, encoder→GPT projection), the instruction task
    and the batch lengths are all read from the file.
    """
    g = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    rec = _Recorder()
    tok = import_official_vq(g["vq"]["checkpoint"]).eval()
    model = import_official_lm(g["lm"]["checkpoint"], vq=tok).eval()
    _compare_vq(rec, g, tok)
    _compare_masks(rec, g)
    _compare_pretrain(rec, g, model)
    _compare_text(rec, g, model)
    _compare_instruct(rec, g, model, load_gpt2_tokenizer().decode)
    return rec.errors
