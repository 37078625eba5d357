import pytest
import torch
import torch.nn.functional as F

from diffatr.config import TextEncoderConfig
from diffatr.encoders.text import TextEncoder, TextInputError, clean_captions, default_text_model_dir


@pytest.fixture(scope="module")
def minilm():
    return TextEncoder(TextEncoderConfig())


def test_default_model_ships_in_the_wheel():
    folder = default_text_model_dir()
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()


def test_default_encoder_gives_semantic_features(minilm):
    feats = F.normalize(minilm.encode(["a dog barks", "a canine barking", "rain falls on a tin roof"]), dim=-1)
    assert feats.shape == (3, 384) and feats.dtype == torch.float32
    sims = feats @ feats.T
    assert sims[0, 1] > sims[0, 2] + 0.3  # paraphrases sit closer than unrelated captions


def test_batching_does_not_change_features(minilm):
    texts = ["a dog barks", "water dripping in a cave", "an engine idles", "birds sing"]
    together = minilm.encode(texts)
    one_by_one = torch.cat([minilm.encode(t) for t in texts])
    assert torch.allclose(together, one_by_one, atol=1e-5)


def test_mean_pooling_ignores_padding(minilm):
    batch = minilm.tokenize(["hi", "a much longer caption about a thunderstorm at night"])
    pooled = minilm(batch["input_ids"], batch["attention_mask"])
    alone = minilm.tokenize(["hi"])
    assert torch.allclose(pooled[0], minilm(alone["input_ids"], alone["attention_mask"])[0], atol=1e-5)


def test_cls_pooling_takes_the_first_token(tmp_path):
    encoder = TextEncoder(TextEncoderConfig(pooling="cls"))
    batch = encoder.tokenize(["a cat meows"])
    hidden = encoder.model(**batch).last_hidden_state
    assert torch.allclose(encoder.encode("a cat meows")[0], hidden[0, 0], atol=1e-5)


def test_empty_and_enormous_captions(minilm):
    with pytest.raises(TextInputError, match="empty"):
        minilm.encode(["   "])
    with pytest.raises(TextInputError, match="string"):
        clean_captions([3])
    huge = "a dog barks " * 5000
    assert minilm.encode(huge).shape == (1, 384)  # truncated, not an error


def test_local_folder_model(tmp_path):
    from transformers import BertConfig, BertModel

    src = default_text_model_dir()
    tiny = BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=64))
    tiny.save_pretrained(tmp_path / "tiny")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (tmp_path / "tiny" / name).write_bytes((src / name).read_bytes())
    enc = TextEncoder(TextEncoderConfig(name_or_path=str(tmp_path / "tiny"), embed_dim=32, pooling="cls"))
    assert enc.encode(["x y z"]).shape == (1, 32)
    with pytest.raises(ValueError, match="hidden size 32"):
        TextEncoder(TextEncoderConfig(name_or_path=str(tmp_path / "tiny"), embed_dim=768))


def test_hub_name_needs_explicit_permission():
    with pytest.raises(FileNotFoundError, match="allow"):
        TextEncoder(TextEncoderConfig(name_or_path="bert-base-uncased", embed_dim=768))


CAPTIONS = ["a dog barks", "rain falls on a tin roof while thunder rumbles far away",
            "Ünïcode café, música: 鳥の声", "hi", "a dog barks " * 200]


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_plain_bert_gives_transformers_numbers_without_importing_it(minilm, pooling):
    """The start-up path (diffatr.encoders.bert): same tokens, same features as transformers."""
    config = TextEncoderConfig(pooling=pooling)
    rng = torch.random.get_rng_state()
    plain = TextEncoder(config, inference_only=True)
    assert torch.equal(torch.random.get_rng_state(), rng)  # built on the meta device: no random init
    reference = minilm if pooling == "mean" else TextEncoder(config)
    assert type(plain.model).__name__ == "PlainBert" and type(reference.model).__name__ != "PlainBert"
    ours, theirs = plain.tokenize(CAPTIONS), reference.tokenize(CAPTIONS)
    assert ours["input_ids"].shape[1] == config.max_length  # the long caption is cut, the rest padded
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
    a, b = plain.encode(CAPTIONS), reference.encode(CAPTIONS)
    assert (a - b).abs().max() < 1e-5 and F.cosine_similarity(a, b).min() > 1 - 1e-6


def test_a_model_plain_bert_cannot_compute_loads_through_transformers(tmp_path):
    import json

    from diffatr.encoders.bert import plain_bert_config

    src = default_text_model_dir()
    assert plain_bert_config(src) is not None
    folder = tmp_path / "relative"
    folder.mkdir()
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        (folder / name).symlink_to(src / name)
    config = json.loads((src / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, position_embedding_type="relative_key")))
    assert plain_bert_config(folder) is None
    encoder = TextEncoder(TextEncoderConfig(name_or_path=str(folder)), inference_only=True)
    assert type(encoder.model).__name__ != "PlainBert"
