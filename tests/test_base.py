import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from base import corpus_docs, encode_doc, parse_args, split_questions, train_tokenizer
from tasks import CHAIN_EVENTS, FINAL_QUESTIONS, OOD_FRAMES, START_EVENTS, make_split

ROOT = __file__.rsplit("/tests/", 1)[0]
SHIPPED = os.path.join(ROOT, "models", "base")


@pytest.fixture(scope="module")
def docs():
    """(prefix, target) documents as the base is trained on them: the default shares."""
    defaults = parse_args([])
    return corpus_docs(3000, seed=0, worked=defaults.worked, story=defaults.story, exclude=split_questions())


class Phrasing:
    """A phrasing only ood_template uses, as a pattern with its slots as wildcards (within a
    sentence); its longest literal piece is checked first, which keeps the scan fast."""

    def __init__(self, template: str):
        pieces = re.split(r"\{\w+\}", template)
        self.literal = max(pieces, key=len)
        self.pattern = re.compile("[^.?!\n]+?".join(map(re.escape, pieces)))

    def search(self, text: str) -> bool:
        return self.literal in text and self.pattern.search(text) is not None


def held_out_phrasings() -> list[Phrasing]:
    return [Phrasing(e[3][2]) for e in START_EVENTS + CHAIN_EVENTS] + [Phrasing(FINAL_QUESTIONS[2])]


def test_corpus_holds_no_question_of_any_split(docs):
    questions = split_questions() | {p.question for p in make_split("test", 2000)}  # the test bucket, beyond 500
    for prefix, target in docs:
        texts = [prefix.split("\n")[0].removeprefix("Question: ")] if prefix else target.split("\n")
        assert not questions & set(texts)


def test_corpus_holds_no_ood_frame_phrasing_step_count_or_number_range(docs):
    ood_words = {w.lower() for f in OOD_FRAMES for w in (*f.people, f.item, *f.group, *f.mates)}
    patterns = held_out_phrasings()
    for prefix, target in docs:
        text = prefix + target
        assert not ood_words & set(re.findall(r"[a-z]+", text.lower())), text
        assert not any(p.search(text) for p in patterns), text
        assert all(int(n) <= 99 for n in re.findall(r"\d+", text)), text  # train values: <= 99
        if prefix:  # a worked problem: at most five steps, given numbers in the train ranges
            question = prefix.split("\n")[0]
            assert 1 <= target.count(" = ") // 2 <= 5 and len(re.findall(r"\d+", question)) <= 6
            assert all(int(n) <= 20 for n in re.findall(r"\d+", question)), question


def test_the_held_out_phrasing_patterns_find_ood_questions():  # the check above can fail
    patterns = held_out_phrasings()
    assert all(any(p.search(q.question) for p in patterns) for q in make_split("ood_template", 50))
    assert not any(p.search(q.question) for q in make_split("train", 200) for p in patterns)


def test_worked_problems_supervise_execution_never_a_plan(docs, tok):
    worked = [(p, t) for p, t in docs if p]
    assert abs(len(worked) / len(docs) - parse_args([]).worked) < 0.05
    planned = [p for p, _ in worked if "\nPlan:\n" in p]
    assert 0.4 < len(planned) / len(worked) < 0.6
    for prefix, target in worked:
        assert prefix.startswith("Question: ") and target.startswith("Solution:\n")
        assert re.search(r"\nAnswer: \d+$", target) and "Plan:" not in target and " to get the " not in target
    ids, sup = encode_doc(tok, *worked[0])
    assert tok.decode([t for t, s in zip(ids, sup) if s]) == worked[0][1] + tok.eos_token
    assert tok.decode([t for t, s in zip(ids, sup) if not s]) == worked[0][0]


def test_fresh_frames_never_repeat_and_never_use_a_split_person_or_an_ood_word():
    import random
    from base import fresh_frame, taboo_words
    from tasks import TRAIN_FRAMES
    rng, taboo = random.Random(0), taboo_words()
    frames = [fresh_frame(rng, taboo) for _ in range(300)]
    words = [(f.item, *f.group, *f.mates, *(p.lower() for p in f.people)) for f in frames]
    assert not {w.lower() for ws in words for w in ws} & taboo
    assert {p for f in TRAIN_FRAMES for p in f.people} <= {w.capitalize() for w in taboo}
    assert len({(f.item, f.group, f.mates) for f in frames}) == len(frames)  # combinations are fresh
    made_up = [f.item for f in frames if f.item not in __import__("base").ITEMS]
    assert 0.25 < len(made_up) / len(frames) < 0.55


def test_tokenizer_reads_numbers_digit_by_digit(docs):
    tok = train_tokenizer(["".join(d) for d in docs[:500]], vocab_size=400)
    text = "apples after buying = 1203 + 45 = 1248"
    pieces = tok.convert_ids_to_tokens(tok(text)["input_ids"])
    assert [p for p in pieces if any(c.isdigit() for c in p)] == list("1203451248")
    assert tok.decode(tok(text)["input_ids"]) == text


@pytest.mark.cli
def test_base_run_writes_a_checkpoint_transformers_opens(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from model import Transformer
    out = tmp_path / "b"
    cmd = [sys.executable, "base.py", "--out", str(out), "--tokenizer-docs", "1500", "--vocab", "400", "--steps", "3",
           "--dim", "64", "--layers", "1", "--heads", "2", "--kv-heads", "1", "--eval-n", "4", "--batch", "4"]
    out_text = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    summary = json.loads(out_text.strip().splitlines()[-1])
    assert {"arithmetic_acc", "test_plain_acc", "test_planned_acc"} <= summary.keys()
    assert json.loads((out / "build.json").read_text())["params"] == summary["params"]
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    ids = torch.tensor([tok("Question: Mia has 3 bags with 4 apples in each bag.")["input_ids"]])
    with torch.no_grad():
        ref = hf(ids).logits
    assert torch.allclose(Transformer.from_pretrained(str(out))(ids), ref, atol=1e-4)
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token_id != tok.eos_token_id


def test_shipped_base_opens_and_matches_its_build_summary():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from model import Transformer
    build = json.load(open(os.path.join(SHIPPED, "build.json")))
    hf = AutoModelForCausalLM.from_pretrained(SHIPPED).eval()
    tok = AutoTokenizer.from_pretrained(SHIPPED)
    assert sum(p.numel() for p in hf.parameters()) == build["params"] and len(tok) == build["vocab"]
    assert build["command"].startswith("python base.py") and build["test_planned_acc"] >= 0.3
    ids = torch.tensor([tok("Question: Mia has 3 bags with 4 apples in each bag.")["input_ids"]])
    with torch.no_grad():
        ref = hf(ids).logits.float()
    torch.testing.assert_close(Transformer.from_pretrained(SHIPPED)(ids), ref, atol=1e-3, rtol=1e-3)
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token_id != tok.eos_token_id
    assert [p for p in tok.convert_ids_to_tokens(tok("= 1203")["input_ids"]) if p.strip("Ġ")][1:] == list("1203")


def test_digit_embeddings_start_on_the_circle_of_their_value(docs):
    from base import init_digit_embeddings
    from model import ModelConfig, Transformer
    tok = train_tokenizer(["".join(d) for d in docs[:300]], vocab_size=400)
    model = Transformer(ModelConfig(model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)).init_weights()
    init_digit_embeddings(model, tok, scale=0.1)
    emb = model.model.embed_tokens.weight
    for d in range(10):
        x, y = emb[tok.convert_tokens_to_ids(str(d)), :2].tolist()
        assert (x, y) == pytest.approx((0.1 * math.cos(2 * math.pi * d / 10), 0.1 * math.sin(2 * math.pi * d / 10)), abs=1e-6)
    assert emb[tok.convert_tokens_to_ids("7"), 9].item() == pytest.approx(0.0, abs=1e-6)  # sin(5 * 2pi * 7 / 10)
