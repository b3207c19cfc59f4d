import json
import math
import re
import subprocess
import sys

import pytest
import torch

from base import build_corpus, train_tokenizer
from tasks import TRAIN_FRAMES, make_split

ROOT = __file__.rsplit("/tests/", 1)[0]


@pytest.fixture(scope="module")
def corpus_and_train():
    train = {p.question for p in make_split("train", 2000)} | {p.question for p in make_split("test", 300)}
    return build_corpus(3000, seed=0, exclude=train), train


def test_tokenizer_reads_numbers_digit_by_digit(corpus_and_train):
    tok = train_tokenizer(corpus_and_train[0][:500], vocab_size=400)
    text = "apples after buying = 1203 + 45 = 1248"
    pieces = tok.convert_ids_to_tokens(tok(text)["input_ids"])
    assert [p for p in pieces if any(c.isdigit() for c in p)] == list("1203451248")
    assert tok.decode(tok(text)["input_ids"]) == text


def test_corpus_holds_no_plan_and_no_train_problem(corpus_and_train):
    docs, train = corpus_and_train
    train_items = {f.item for f in TRAIN_FRAMES}
    for d in docs:
        assert "Plan:" not in d and " to get the " not in d and not re.search(r"^(First|Second), ", d, re.M)
        assert d not in train
        if d.startswith("Question: "):  # a worked problem: one step, or up to five in a corpus-only frame
            question = d.split("\n")[0].removeprefix("Question: ")
            steps = d.split("Solution:\n")[1].count(" = ") // 2
            assert question not in train
            train_frame = any(f" {item} " in question or f" {item}." in question for item in train_items)
            assert steps == 1 if train_frame else 1 <= steps <= 5


def test_corpus_mixes_story_arithmetic_and_worked_problems(corpus_and_train):
    docs = corpus_and_train[0]
    worked = sum(d.startswith("Question: ") for d in docs)
    arithmetic = sum(bool(re.fullmatch(r"([a-z ]+ = \d+ [-+*/] \d+ = \d+\n?)+", d)) for d in docs)
    story = len(docs) - worked - arithmetic
    assert min(worked, arithmetic, story) > len(docs) / 10


def test_base_run_writes_a_checkpoint_transformers_opens(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from model import Transformer
    cmd = [sys.executable, "base.py", "--out", str(tmp_path), "--docs", "1500", "--vocab", "400", "--steps", "3",
           "--dim", "64", "--layers", "1", "--heads", "2", "--eval-n", "4"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    assert {"arithmetic_acc", "test_plain_acc", "test_planned_acc"} <= summary.keys()
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path)
    ids = torch.tensor([tok("Question: Mia has 3 bags with 4 apples in each bag.")["input_ids"]])
    with torch.no_grad():
        ref = hf(ids).logits
    assert torch.allclose(Transformer.from_pretrained(str(tmp_path))(ids), ref, atol=1e-4)
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token_id != tok.eos_token_id


def test_digit_embeddings_start_on_the_circle_of_their_value(corpus_and_train):
    from base import init_digit_embeddings
    from model import ModelConfig, Transformer
    tok = train_tokenizer(corpus_and_train[0][:300], vocab_size=400)
    model = Transformer(ModelConfig(model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)).init_weights()
    init_digit_embeddings(model, tok, scale=0.1)
    emb = model.model.embed_tokens.weight
    for d in range(10):
        x, y = emb[tok.convert_tokens_to_ids(str(d)), :2].tolist()
        assert (x, y) == pytest.approx((0.1 * math.cos(2 * math.pi * d / 10), 0.1 * math.sin(2 * math.pi * d / 10)), abs=1e-6)
    assert emb[tok.convert_tokens_to_ids("7"), 9].item() == pytest.approx(0.0, abs=1e-6)  # sin(5 * 2pi * 7 / 10)
