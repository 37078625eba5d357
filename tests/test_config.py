import dataclasses

import pytest

from diffatr.config import (
    AISFX_LOGMEL,
    ConfigError,
    ModelConfig,
    from_dict,
    from_json,
    load_model_config,
    named_configs,
    to_dict,
    to_json,
)


@pytest.mark.parametrize("name", named_configs())
def test_named_configs_round_trip(name):
    config = load_model_config(name)
    assert config.name == name
    assert from_json(ModelConfig, to_json(config)) == config


def test_shipped_configs_include_the_paper_and_tiny():
    assert {"default", "tiny", "paper-resnet38", "paper-cnn14"} <= set(named_configs())
    paper = load_model_config("paper-resnet38")
    assert (paper.text.pooling, paper.audio.name, paper.audio.frontend.sample_rate) == ("cls", "resnet38", 32000)
    assert paper.diffusion.num_train_timesteps == 50 and paper.diffusion.schedule == "cosine"


def test_nested_dataclasses_are_rebuilt():
    config = from_dict(ModelConfig, to_dict(ModelConfig()))
    assert config.audio.frontend == AISFX_LOGMEL
    assert isinstance(config.denoiser, type(ModelConfig().denoiser))


def test_unknown_key_is_an_error_not_silently_dropped():
    data = to_dict(ModelConfig())
    data["denoiser"]["widht"] = 3
    with pytest.raises(ConfigError, match="widht"):
        from_dict(ModelConfig, data)


def test_missing_keys_take_defaults():
    data = to_dict(ModelConfig())
    del data["retrieval"]["seed"]
    assert from_dict(ModelConfig, data).retrieval.seed == 0


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().embed_dim = 3


def test_bad_json_and_unknown_name():
    with pytest.raises(ConfigError, match="not valid JSON"):
        from_json(ModelConfig, "{nope")
    with pytest.raises(ConfigError, match="no config named"):
        load_model_config("no-such-config")
