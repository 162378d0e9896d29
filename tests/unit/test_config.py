from __future__ import annotations

import pytest

from neurolm.config import ConfigError, PreprocessConfig, apply_overrides, config_hash, load_config


def test_overrides_are_parsed_as_yaml_and_nested() -> None:
    tree = apply_overrides({}, ["a.b=3e-4", "a.c=[1, 2]", "d=true", "e=s3://x/y"])
    assert tree == {"a": {"b": 3e-4, "c": [1, 2]}, "d": True, "e": "s3://x/y"}


def test_preset_plus_overrides(tmp_path) -> None:
    preset = tmp_path / "p.yaml"
    preset.write_text("corpus: edf\ninput: /data\noutput: /out\nnotch: 50\n")
    cfg = load_config(PreprocessConfig, preset, ["notch=60", "samples_per_shard=16"])
    assert (cfg.corpus, cfg.notch, cfg.samples_per_shard) == ("edf", 60, 16)
    assert config_hash(cfg) != config_hash(load_config(PreprocessConfig, preset))


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("corpus=eeglab", ["corpus", "eeglab", "'edf'"]),  # the allowed values are listed
        ("samples_per_shard=0", ["samples_per_shard", "0", "greater than 0"]),
        ("colour=red", ["colour", "unknown key"]),
        ("split_fractions=[0.5,0.5,0.5]", ["split_fractions", "summing to 1"]),
    ],
)
def test_bad_values_name_key_value_and_what_is_allowed(override: str, names: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(PreprocessConfig, None, ["corpus=edf", "input=/d", "output=/o", override])
    for name in names:
        assert name in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(PreprocessConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("corpus: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(PreprocessConfig, bad)
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(PreprocessConfig, None, ["no-equals-sign"])


# ---------------------------------------------------------------------- stage configs and their model sections

PRETRAIN = ["tokenizer=/runs/tok/export", "data.train=[/shards/train]", "run.name=r", "run.storage_path=/runs"]
INSTRUCT = ["init=/runs/pre/export", "tasks=[{name: TUAB, train: /shards/tuab}]", "run.name=r",
            "run.storage_path=/runs"]


@pytest.mark.parametrize(
    ("cls", "base", "override", "names"),
    [
        # a bad model key or preset fails validation (before any Ray work), naming the key and what is allowed
        ("pretrain", PRETRAIN, "model.overrides.bogus_field=1", ["model.overrides.bogus_field", "unknown key",
                                                                  "per_sample_text_positions"]),
        ("pretrain", PRETRAIN, "model.overrides.gpt.n_layr=1", ["model.overrides.gpt.n_layr", "n_layer"]),
        ("pretrain", PRETRAIN, "model.overrides.gpt.n_layer=zero", ["model.overrides.gpt.n_layer", "zero"]),
        ("pretrain", PRETRAIN, "model.preset=huge", ["model.preset", "huge", "'xl'"]),
        ("tokenizer", PRETRAIN[1:], "model.preset=xl", ["model.preset", "'base'"]),
        ("tokenizer", PRETRAIN[1:], "model.overrides.n_layer=1", ["model.overrides.n_layer", "encoder_layers"]),
        # stage 3 takes its model from `init` and its shards from `tasks`
        ("instruct", INSTRUCT, "model.preset=base", ["model.preset", "unknown key", "overrides"]),
        ("instruct", INSTRUCT, "data.train=[/x]", ["data.train", "unknown key"]),
        ("instruct", INSTRUCT, "data.max_tokens=5", ["data.max_tokens", "unknown key"]),
        ("instruct", INSTRUCT, "model.overrides.bogus=1", ["model.overrides.bogus", "unknown key"]),
        # keys renamed in this release name their new place
        ("instruct", INSTRUCT, "mixture.block_size=8", ["mixture.block_size was renamed mixture.block_micro_batches"]),
        ("pretrain", PRETRAIN, "deepspeed.activation_checkpointing=true",
         ["deepspeed.activation_checkpointing was renamed train.activation_checkpointing"]),
    ],
)
def test_stage_configs_reject_bad_model_and_data_keys(cls: str, base: list[str], override: str,
                                                      names: list[str]) -> None:
    from neurolm.config import InstructJobConfig, PretrainJobConfig, TokenizerJobConfig

    kind = {"pretrain": PretrainJobConfig, "tokenizer": TokenizerJobConfig, "instruct": InstructJobConfig}[cls]
    with pytest.raises(ConfigError) as err:
        load_config(kind, None, [*base, override])
    for name in names:
        assert name in str(err.value)


def test_model_sections_build_the_preset_with_typed_overrides() -> None:
    from neurolm.config import InstructJobConfig, PretrainJobConfig

    cfg = load_config(PretrainJobConfig, None, [*PRETRAIN, "model.preset=base", "model.overrides.gpt.n_layer=2",
                                                "model.overrides.causal_encoder_inputs=true"])
    model = cfg.model.build()
    assert (model.gpt.n_layer, model.gpt.n_embd, model.causal_encoder_inputs) == (2, 768, True)
    instruct = load_config(InstructJobConfig, None, [*INSTRUCT, "model.overrides.per_sample_text_positions=true"])
    assert instruct.model.override_dict() == {"per_sample_text_positions": True}
    # the official recipe adds the text LM loss at weight 1
    assert instruct.text_loss_weight == 1.0 and instruct.train.activation_checkpointing is False
    assert instruct.shard_uris() == ["/shards/tuab"]
