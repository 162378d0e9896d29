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
