import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from comt.model import ModelConfig, Transformer, UnsupportedModelError
from conftest import HF_CONFIGS, make_hf_model, ragged_batch, randomize_

TOL = 1e-4
LENGTHS = [5, 17, 1, 11, 17, 3]


def hf_logits(hf, ids, mask):
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return hf(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits.float()


def our_logits(model, ids, mask):
    with torch.no_grad():
        return model(ids, mask)


def max_diff_on_tokens(a, b, mask):
    return (a - b)[mask.bool()].abs().max().item()


def test_hf_to_ours_logit_parity_on_padded_batch(kind, tmp_path):
    hf = make_hf_model(kind)
    hf.save_pretrained(tmp_path)
    ours = Transformer.from_pretrained(str(tmp_path))
    ids, mask, _ = ragged_batch(LENGTHS, HF_CONFIGS[kind]["vocab_size"])
    assert max_diff_on_tokens(our_logits(ours, ids, mask), hf_logits(hf, ids, mask), mask) <= TOL


def test_ours_to_hf_round_trip(kind, tmp_path):
    """A fresh model of ours, saved, opens in transformers with the same logits; and a
    transformers re-save of it opens in ours with the same logits again."""
    cfg = ModelConfig.from_hf_dict(HF_CONFIGS[kind])
    cfg.hf = {}  # a model born here writes its own config.json
    torch.manual_seed(1)
    ours = randomize_(Transformer(cfg), seed=1).eval()
    ours.save_pretrained(str(tmp_path / "ours"))
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "ours"), attn_implementation="eager").eval()
    ids, mask, _ = ragged_batch(LENGTHS, cfg.vocab_size, seed=1)
    ref = our_logits(ours, ids, mask)
    assert max_diff_on_tokens(hf_logits(hf, ids, mask), ref, mask) <= TOL
    hf.save_pretrained(tmp_path / "hf")
    again = Transformer.from_pretrained(str(tmp_path / "hf"))
    assert max_diff_on_tokens(our_logits(again, ids, mask), ref, mask) <= TOL


def test_padding_does_not_change_a_rows_logits(kind, tmp_path):
    hf = make_hf_model(kind)
    hf.save_pretrained(tmp_path)
    model = Transformer.from_pretrained(str(tmp_path))
    ids, mask, prompts = ragged_batch(LENGTHS, HF_CONFIGS[kind]["vocab_size"])
    batched = our_logits(model, ids, mask)
    for i, p in enumerate(prompts):
        alone = our_logits(model, torch.tensor([p]), None)[0]
        assert (batched[i, -len(p):] - alone).abs().max().item() <= TOL


def test_left_padding_gives_finite_logits_and_gradients(tmp_path):
    make_hf_model("llama").save_pretrained(tmp_path)
    model = Transformer.from_pretrained(str(tmp_path))
    ids, mask, _ = ragged_batch(LENGTHS, 128)
    logits = model(ids, mask)
    assert torch.isfinite(logits).all()
    logits[mask.bool()].logsumexp(-1).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_logits_mask_returns_only_selected_positions(tmp_path):
    make_hf_model("qwen3").save_pretrained(tmp_path)
    model = Transformer.from_pretrained(str(tmp_path))
    ids, mask, _ = ragged_batch(LENGTHS, 128)
    sel = mask.bool() & (torch.rand(mask.shape, generator=torch.Generator().manual_seed(0)) < 0.5)
    with torch.no_grad():
        picked = model(ids, mask, logits_mask=sel)
    assert picked.shape == (int(sel.sum()), 128)
    assert torch.allclose(picked, our_logits(model, ids, mask)[sel], atol=1e-5)


def test_sharded_checkpoint_loads(tmp_path):
    hf = make_hf_model("llama")
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    ids, mask, _ = ragged_batch(LENGTHS, 128)
    ours = Transformer.from_pretrained(str(tmp_path))
    assert max_diff_on_tokens(our_logits(ours, ids, mask), hf_logits(hf, ids, mask), mask) <= TOL


@pytest.mark.parametrize("change, words", [
    ({"model_type": "mistral"}, "supported: llama, qwen2, qwen3"),
    ({"model_type": "qwen2_moe"}, "supported: llama, qwen2, qwen3"),
    ({"use_sliding_window": True}, "sliding-window"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "supported: default, linear, llama3"),
])
def test_unsupported_configs_are_refused_by_name(tmp_path, change, words):
    (tmp_path / "config.json").write_text(json.dumps(HF_CONFIGS["qwen2"] | change))
    with pytest.raises(UnsupportedModelError, match=words):
        Transformer.from_pretrained(str(tmp_path))


def test_missing_weights_are_reported(tmp_path):
    hf = make_hf_model("llama")
    hf.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="missing.*layers.2"):
        Transformer.from_pretrained(str(tmp_path))


def test_defaults_for_absent_config_keys_follow_transformers(tmp_path):
    """A config.json that omits tie_word_embeddings / head_dim means what transformers says."""
    d = {k: v for k, v in HF_CONFIGS["qwen3"].items() if k not in ("tie_word_embeddings", "head_dim")}
    (tmp_path / "config.json").write_text(json.dumps(d))
    hf = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tmp_path), attn_implementation="eager")
    randomize_(hf).eval().save_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(d))  # keep the keys absent
    ours = Transformer.from_pretrained(str(tmp_path / "ckpt"))
    assert ours.config.tie_word_embeddings == hf.config.tie_word_embeddings
    assert ours.config.head_dim == hf.config.head_dim
    ids, mask, _ = ragged_batch(LENGTHS, 128)
    assert max_diff_on_tokens(our_logits(ours, ids, mask), hf_logits(hf, ids, mask), mask) <= TOL
