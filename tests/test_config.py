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


@pytest.mark.parametrize("knob, bad, words", [
    ("top_k", 0, "Candidates re-ranked (top_k) must be at least 1, got 0"), ("top_k", 2.5, "(top_k) must be an integer"),
    ("num_inference_steps", 0, "Diffusion steps (num_inference_steps) must be at least 1"),
    ("alpha", -0.1, "(alpha) must be between"), ("alpha", 10.5, "(alpha) must be between 0.0 and 10.0"),
    ("temperature", 0.0, "(temperature) must be between"), ("temperature", float("nan"), "(temperature) must be a number"),
    ("seed", -1, "(seed) must be between"), ("seed", True, "(seed) must be an integer"),
    ("fusion", "max", "(fusion) must be one of paper, zscore"), ("num_results", 0, "(num_results) must be at least 1"),
    ("top_k", "8", "(top_k) must be an integer, got '8'"),
    ("one_per_sound", 1, "One result per sound (one_per_sound) must be true or false, got 1"),
    ("one_per_sound", "yes", "(one_per_sound) must be true or false"),
    ("similar_space", "text", "(similar_space) must be one of backbone, head, backbone+head"),
])
def test_retrieval_knobs_are_validated_once_and_name_the_setting(knob, bad, words):
    import dataclasses
    import re

    from diffatr.config import ConfigError, ModelConfig, RetrievalConfig
    from diffatr.errors import DiffatrError

    with pytest.raises(ConfigError, match=re.escape(words)) as caught:
        RetrievalConfig(**{knob: bad})
    assert isinstance(caught.value, DiffatrError)
    RetrievalConfig(top_k=1, num_inference_steps=1, alpha=0.0, temperature=1e-3, seed=0, fusion="zscore")  # edges pass
    with pytest.raises(ConfigError, match=re.escape("must be between 1 and 50 (T, the diffusion steps")):
        dataclasses.replace(ModelConfig(), retrieval=RetrievalConfig(num_inference_steps=51))


def test_with_retrieval_is_how_an_entry_point_builds_the_settings():
    from diffatr.config import ConfigError, ModelConfig, RetrievalConfig

    model = ModelConfig()
    settings = model.with_retrieval(top_k=5.0, alpha=2, seed=None)  # a form's 5.0; None = unchanged
    assert settings == RetrievalConfig(top_k=5, alpha=2.0) and type(settings.top_k) is int
    assert type(settings.alpha) is float and settings.seed == model.retrieval.seed
    with pytest.raises(ConfigError, match="unknown retrieval settings"):
        model.with_retrieval(topk=3)
    with pytest.raises(ConfigError, match="Diffusion steps"):
        model.with_retrieval(num_inference_steps=model.diffusion.num_train_timesteps + 1)


def test_every_knob_carries_what_an_interface_needs():
    """The CLI flags and the app's controls are made from these fields' metadata."""
    from diffatr.config import RetrievalConfig, knob_fields

    names = [f.name for f in knob_fields()]
    assert names == [f.name for f in dataclasses.fields(RetrievalConfig)]
    flags = []
    for f in knob_fields():
        meta = f.metadata
        assert meta["label"] and meta["info"] and meta["help"] and meta["flags"], f.name
        assert meta["label"][0].isupper() and "_" not in meta["label"], f.name  # plain words for a page
        flags += [*meta["flags"], *meta["aliases"]]
        if f.type == "bool":  # a switch: no bounds, no choices (the CLI gives --x / --no-x)
            assert meta["low"] is None and meta["choices"] is None and isinstance(f.default, bool), f.name
        elif meta["choices"] is None:
            assert meta["low"] is not None and meta["low"] <= f.default, f.name
            assert meta["high"] is None or f.default <= meta["high"], f.name
        else:
            assert f.default in meta["choices"]
    assert len(flags) == len(set(flags))
