import json
import math
import os
import subprocess
import sys

import pytest
import torch

from base import train_tokenizer
from comt.tasks import make_split

ROOT = __file__.rsplit("/tests/", 1)[0]
SHIPPED = os.path.join(ROOT, "models", "base")


def test_tokenizer_reads_numbers_digit_by_digit(docs):
    tok = train_tokenizer(["".join(d) for d in docs[:500]], vocab_size=400)
    text = "apples after buying = 1203 + 45 = 1248"
    pieces = tok.convert_ids_to_tokens(tok(text)["input_ids"])
    assert [p for p in pieces if any(c.isdigit() for c in p)] == list("1203451248")
    assert tok.decode(tok(text)["input_ids"]) == text


@pytest.mark.cli
def test_base_run_writes_a_checkpoint_transformers_opens(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from comt.model import Transformer
    out = tmp_path / "b"
    cmd = [sys.executable, "base.py", "--out", str(out), "--tokenizer-docs", "1500", "--vocab", "400", "--steps", "3",
           "--dim", "64", "--layers", "1", "--heads", "2", "--kv-heads", "1", "--eval-n", "4", "--batch", "4"]
    out_text = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    summary = json.loads(out_text.strip().splitlines()[-1])
    assert set(summary["arithmetic"]) == {"train", "wide"}
    splits = {"test", "ood_template", "ood_steps", "ood_numbers", "ood_distractor"}
    for figures in (summary["from_plan"], summary["question_only"], summary["own_plan"]["plan_correct"]):
        assert set(figures) == splits and all(0 <= a <= 1 for a in figures.values())  # every split, three ways
    assert json.loads((out / "build.json").read_text())["params"] == summary["params"]
    more = tmp_path / "more"  # a second phase continues it, and records both commands
    cmd2 = [sys.executable, "base.py", "--init", str(out), "--out", str(more), "--steps", "2", "--plans", "0.4",
            "--eval-n", "2", "--batch", "4"]
    subprocess.run(cmd2, cwd=ROOT, capture_output=True, text=True, check=True)
    build = json.loads((more / "build.json").read_text())
    assert build["init"]["command"] == "python base.py " + " ".join(cmd[2:]) and build["args"]["plans"] == 0.4
    assert (more / "tokenizer.json").read_text() == (out / "tokenizer.json").read_text()
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    ids = torch.tensor([tok("Question: Mia has 3 bags with 4 apples in each bag.")["input_ids"]])
    with torch.no_grad():
        ref = hf(ids).logits
    assert torch.allclose(Transformer.from_pretrained(str(out))(ids), ref, atol=1e-4)
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token_id != tok.eos_token_id


def test_shipped_base_opens_and_matches_its_build_summary():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from comt.model import Transformer
    build = json.load(open(os.path.join(SHIPPED, "build.json")))
    hf = AutoModelForCausalLM.from_pretrained(SHIPPED).eval()
    tok = AutoTokenizer.from_pretrained(SHIPPED)
    assert sum(p.numel() for p in hf.parameters()) == build["params"] and len(tok) == build["vocab"]
    # two phases, each the command a user runs: from scratch, then continued with plan documents
    assert build["command"].startswith("python base.py --init ") and build["init"]["command"] == "python base.py"
    assert build["args"]["plans"] > 0 and build["init"]["args"].get("plans", 0) == 0
    assert min(build["arithmetic"].values()) >= 0.95  # every split's number range
    for split, ceiling in build["from_plan"].items():  # it carries out a handed plan and plans in its own words,
        own = build["own_plan"]["plan_correct"][split]  # but does not answer under the post-training prompt
        assert min(ceiling, own) >= 0.5 and min(ceiling, own) > build["question_only"][split] + 0.4, split
    ids = torch.tensor([tok("Question: Mia has 3 bags with 4 apples in each bag.")["input_ids"]])
    with torch.no_grad():
        ref = hf(ids).logits.float()
    torch.testing.assert_close(Transformer.from_pretrained(SHIPPED)(ids), ref, atol=1e-3, rtol=1e-3)
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token_id != tok.eos_token_id
    assert [p for p in tok.convert_ids_to_tokens(tok("= 1203")["input_ids"]) if p.strip("Ġ")][1:] == list("1203")


def test_shipped_base_executes_gold_plans_and_plans_as_its_build_summary_says():
    """Recompute two figures of build.json: test problems from their gold plan and in the base's own
    plan form (greedy, 200)."""
    from transformers import AutoTokenizer

    from comt.common import pad_id
    from comt.engine import Engine
    from comt.evaluation import greedy_judgements
    from comt.model import Transformer
    build = json.load(open(os.path.join(SHIPPED, "build.json")))
    tok = AutoTokenizer.from_pretrained(SHIPPED)
    engine = Engine(Transformer.from_pretrained(SHIPPED).eval(), pad_id=pad_id(tok))
    problems = make_split("test", build["args"]["eval_n"])
    judged = greedy_judgements(engine, tok, problems, 192, gold_plan=True)
    acc = sum(j.correct for j in judged) / len(judged)
    assert acc == pytest.approx(build["from_plan"]["test"], abs=0.015)  # a rare greedy tie may flip on another CPU
    from comt.evaluation import own_plan_judgements
    right = [j["plan_correct"] for j in own_plan_judgements(engine, tok, problems, 192)]
    assert sum(right) / len(right) == pytest.approx(build["own_plan"]["plan_correct"]["test"], abs=0.015)


def test_digit_embeddings_start_on_the_circle_of_their_value(docs):
    from base import init_digit_embeddings
    from comt.model import ModelConfig, Transformer
    tok = train_tokenizer(["".join(d) for d in docs[:300]], vocab_size=400)
    model = Transformer(ModelConfig(model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)).init_weights()
    init_digit_embeddings(model, tok, scale=0.1)
    emb = model.model.embed_tokens.weight
    for d in range(10):
        x, y = emb[tok.convert_tokens_to_ids(str(d)), :2].tolist()
        assert (x, y) == pytest.approx((0.1 * math.cos(2 * math.pi * d / 10), 0.1 * math.sin(2 * math.pi * d / 10)), abs=1e-6)
    assert emb[tok.convert_tokens_to_ids("7"), 9].item() == pytest.approx(0.0, abs=1e-6)  # sin(5 * 2pi * 7 / 10)
