import json
import pickle

import pytest
import torch

from diffatr.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from diffatr.model import DiffATR


def make_model(config, seed=0):
    torch.manual_seed(seed)
    return DiffATR(config)


def test_round_trip_is_exact_and_needs_no_flags(tmp_path, tiny_config):
    model = make_model(tiny_config)
    save_checkpoint(model, tmp_path / "ckpt", extra={"step": 7})
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == tiny_config
    assert loaded.checkpoint_extra == {"step": 7}
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    # the weights file inside the folder works too
    assert load_checkpoint(tmp_path / "ckpt" / "model.safetensors").config == tiny_config


def test_save_replaces_an_existing_checkpoint_whole(tmp_path, tiny_config):
    save_checkpoint(make_model(tiny_config, 0), tmp_path / "c")
    second = make_model(tiny_config, 1)
    save_checkpoint(second, tmp_path / "c")
    loaded = load_checkpoint(tmp_path / "c")
    assert torch.equal(loaded.text_head.weight, second.text_head.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temp folders left behind


def test_truncated_weights_give_a_clear_error(tmp_path, tiny_config):
    save_checkpoint(make_model(tiny_config), tmp_path / "c")
    weights = tmp_path / "c" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "c")


def test_config_that_does_not_match_the_weights(tmp_path, tiny_config):
    save_checkpoint(make_model(tiny_config), tmp_path / "c")
    cfg_path = tmp_path / "c" / "config.json"
    payload = json.loads(cfg_path.read_text())
    payload["model"]["denoiser"]["width"] = 8
    cfg_path.write_text(json.dumps(payload))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_checkpoint(tmp_path / "c")


def test_missing_files_and_bad_json(tmp_path, tiny_config):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing")
    save_checkpoint(make_model(tiny_config), tmp_path / "c")
    (tmp_path / "c" / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_checkpoint(tmp_path / "c")
    (tmp_path / "c" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path / "c")


def test_pickles_are_refused_without_unpickling(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    for name in ("evil.pth", "evil.safetensors"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(Boom()))
        with pytest.raises(CheckpointError, match="pickle"):
            load_checkpoint(path)
    torch.save({"model": {}}, tmp_path / "torch_zip.bin")
    with pytest.raises(CheckpointError, match="convert-panns"):
        load_checkpoint(tmp_path / "torch_zip.bin")


def test_loading_a_checkpoint_leaves_the_global_rng_alone():
    import torch

    from diffatr.checkpoint import load_checkpoint
    from diffatr.runtime import default_checkpoint_dir

    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    load_checkpoint(default_checkpoint_dir())
    assert torch.equal(torch.random.get_rng_state(), state)


def test_residual_text_head_starts_as_the_locked_tower_and_learns_a_correction():
    import dataclasses

    from diffatr.config import ConfigError, load_model_config
    from diffatr.model import DiffATR

    config = load_model_config("tiny")
    config = dataclasses.replace(config, text_head="residual", embed_dim=config.text.embed_dim,
                                 denoiser=dataclasses.replace(config.denoiser, embed_dim=config.text.embed_dim),
                                 head_hidden_dim=8, head_dropout=0.1)
    model = DiffATR(config).eval()
    text = torch.randn(5, config.text.embed_dim, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(model.project_text(text), torch.nn.functional.normalize(text, dim=-1))
    loss = (model.project_text(text) * torch.randn_like(text)).sum()
    loss.backward()
    assert model.text_head.mlp[2].weight.grad.abs().sum() > 0  # the correction is trained
    with pytest.raises(ConfigError, match="keeps the text encoder's space"):
        dataclasses.replace(config, embed_dim=config.text.embed_dim + 1)
