"""Official checkpoint import/export and our safetensors format."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch

from neurolm.models.io import (
    import_official_cli,
    load_neurolm,
    load_pretrained,
    load_tokenizer,
    save_pretrained,
)
from neurolm.models.neurolm import NeuroLM, NeuroLMConfig
from neurolm.models.official import (
    CheckpointMismatchError,
    export_official_lm,
    export_official_vq,
    import_official_lm,
    import_official_vq,
)


@pytest.fixture(scope="module")
def golden(golden_path):
    return torch.load(golden_path, weights_only=True)


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_prefixes_and_missing_optimizer_are_accepted(golden) -> None:
    ckpt = golden["vq"]["checkpoint"]
    reference = import_official_vq(ckpt)
    bare = OrderedDict((k[len("_orig_mod."):], v) for k, v in ckpt["model"].items())
    ddp = OrderedDict(("module." + k, v) for k, v in ckpt["model"].items())
    args = {"encoder_args": ckpt["encoder_args"], "decoder_args": ckpt["decoder_args"]}
    for variant in ({"model": bare, **args}, {**ckpt, "model": ddp}):
        assert _same_state(import_official_vq(variant), reference)
    # a bare state dict records no head counts: they must be given (64-wide heads are assumed otherwise)
    with pytest.raises(ValueError, match="head count"):
        import_official_vq(ckpt["model"])
    assert _same_state(import_official_vq(ckpt["model"], encoder_heads=2, decoder_heads=2), reference)


def test_export_reproduces_the_official_layout(golden) -> None:
    vq_ckpt, lm_ckpt = golden["vq"]["checkpoint"], golden["lm"]["checkpoint"]
    tok = import_official_vq(vq_ckpt)
    model = import_official_lm(lm_ckpt, vq=tok)
    vq_out, lm_out = export_official_vq(tok), export_official_lm(model)
    assert list(vq_out["model"]) == list(vq_ckpt["model"])  # same keys, same order
    assert list(lm_out["model"]) == list(lm_ckpt["model"])
    assert all(torch.equal(vq_out["model"][k], v) for k, v in vq_ckpt["model"].items())
    assert all(torch.equal(lm_out["model"][k], v) for k, v in lm_ckpt["model"].items())
    assert lm_out["model_args"] == {k: lm_ckpt["model_args"][k] for k in lm_out["model_args"]}
    groups = [len(g["params"]) for g in lm_out["optimizer"]["param_groups"]]
    assert groups == [len(g["params"]) for g in lm_ckpt["optimizer"]["param_groups"]]


def test_mismatched_file_names_missing_unexpected_and_shapes(golden) -> None:
    sd = OrderedDict(golden["vq"]["checkpoint"]["model"])
    sd.pop("_orig_mod.VQ.encoder.fc_norm.bias")
    sd["_orig_mod.VQ.encoder.extra.weight"] = torch.zeros(1)
    sd["_orig_mod.VQ.decode_task_layer_raw.0.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointMismatchError) as err:
        import_official_vq({**golden["vq"]["checkpoint"], "model": sd})
    message = str(err.value)
    assert "VQ.encoder.fc_norm.bias" in message and "VQ.encoder.extra.weight" in message
    assert "VQ.decode_task_layer_raw.0.bias: checkpoint (3,) vs model (16,)" in message


def test_unreadable_file_gets_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "VQ.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights-only torch checkpoint"):
        load_tokenizer(str(bad))


def test_safetensors_round_trip_and_cli(golden, tmp_path) -> None:
    vq_path, lm_path = tmp_path / "VQ.pt", tmp_path / "NeuroLM-B.pt"
    torch.save(golden["vq"]["checkpoint"], vq_path)
    torch.save(golden["lm"]["checkpoint"], lm_path)
    assert import_official_cli(["--vq", str(vq_path), "--lm", str(lm_path), "--output", str(tmp_path / "out")]) == 0
    tok = load_tokenizer(str(tmp_path / "out" / "tokenizer"))
    model = load_neurolm(str(tmp_path / "out" / "neurolm"))
    assert _same_state(tok, import_official_vq(str(vq_path)))
    assert _same_state(model, load_neurolm(str(lm_path), tokenizer=str(vq_path)))
    meta = json.loads((tmp_path / "out" / "neurolm" / "config.json").read_text())
    assert meta["kind"] == "neurolm" and meta["config"]["code_head"] is True
    assert import_official_cli(["--vq", str(tmp_path / "missing.pt"), "--output", str(tmp_path / "x")]) == 2


def test_encoder_to_gpt_projection_round_trips(tmp_path, make_batch) -> None:
    # NeuroLM-L/XL shape: encoder width != GPT width adds encode_transform_layer (Linear + GELU)
    cfg = NeuroLMConfig.preset("debug", gpt={"n_embd": 24, "n_head": 2}, encoder={"n_embd": 16, "n_head": 2})
    model = NeuroLM(cfg).eval()
    official = export_official_lm(model, tmp_path / "NeuroLM-L.pt")
    assert "_orig_mod.encode_transform_layer.0.weight" in official["model"]
    back = import_official_lm(str(tmp_path / "NeuroLM-L.pt"), encoder_heads=2).eval()
    assert _same_state(back, model)
    b = make_batch([(3, 4), (2, 2)], 16)
    with torch.no_grad():
        a = model(b["x"], b["input_chans"], b["input_time"], b["input_mask"], return_logits=True).logits
        c = load_pretrained(save_pretrained(back, str(tmp_path / "ours")))(
            b["x"], b["input_chans"], b["input_time"], b["input_mask"], return_logits=True).logits
    assert torch.equal(a, c)


def test_a_nested_config_override_changes_only_its_keys(tmp_path) -> None:
    """Stage 3 passes ``model.overrides`` such as ``{gpt: {dropout: 0.2}}`` to the loaded export: the rest of the
    ``gpt`` section (width, layers, vocabulary) stays the export's."""
    torch.manual_seed(0)
    model = NeuroLM(NeuroLMConfig.preset("tiny"))
    save_pretrained(model, str(tmp_path / "lm"))
    loaded = load_neurolm(str(tmp_path / "lm"), gpt={"dropout": 0.2})
    assert loaded.config.gpt.dropout == 0.2
    assert loaded.config.gpt.model_dump(exclude={"dropout"}) == model.config.gpt.model_dump(exclude={"dropout"})
