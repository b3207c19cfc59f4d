import re

import pytest

from comt.tasks import FINAL_QUESTIONS, SPLITS, TRAIN_FRAMES, comt_target, cot_text, make_split

N = 2000
NUM = re.compile(r"\d+")
LINE = re.compile(r"^(?P<name>[a-z ]+) = (?P<x>\d+) (?P<op>[-+*/]) (?P<y>\d+) = (?P<z>\d+)$")
TRAIN_ITEMS = {f.item for f in TRAIN_FRAMES}


@pytest.fixture(scope="module")
def splits():
    return {s: make_split(s, N) for s in SPLITS}


def recompute(line):
    m = LINE.match(line)
    assert m, f"not an execution line: {line!r}"
    x, y, op = int(m["x"]), int(m["y"]), m["op"]
    if op == "/":
        assert x % y == 0, f"inexact division: {line}"
    return {"+": x + y, "-": x - y, "*": x * y, "/": x // y}[op], int(m["z"])


def test_plans_contain_no_digit(splits):
    for s, probs in splits.items():
        assert not any(re.search(r"\d", p.plan) for p in probs), s


def test_each_solution_line_is_right_and_matches_the_gold_intermediate(splits):
    for s, probs in splits.items():
        for p in probs:
            lines = p.solution.split("\n")
            assert len(lines) == len(p.intermediates) == len(p.plan.split("\n")) - 1
            for line, gold in zip(lines, p.intermediates):
                value, written = recompute(line)
                assert value == written == gold, (s, p.id, line)


def test_each_step_uses_the_previous_result(splits):
    for p in splits["train"]:
        lines = p.solution.split("\n")
        for prev, line in zip(lines, lines[1:]):
            assert LINE.match(line)["x"] == LINE.match(prev)["z"]


def test_answer_is_the_last_intermediate(splits):
    for probs in splits.values():
        for p in probs:
            assert float(p.answer) == p.intermediates[-1] > 0
            assert cot_text(p).endswith(f"Answer: {p.answer}") and comt_target(p).endswith("Solution:\n")


def test_splits_are_disjoint(splits):
    seen = {}
    for s, probs in splits.items():
        for p in probs:
            assert seen.setdefault(p.question, s) == s, f"{p.question!r} in {seen[p.question]} and {s}"
        assert len({p.question for p in probs}) == N


def test_generation_is_deterministic_by_seed():
    a, b, c = make_split("train", 300, seed=0), make_split("train", 300, seed=0), make_split("train", 300, seed=1)
    assert [p.question for p in a] == [p.question for p in b]
    assert [p.question for p in a] != [p.question for p in c]


def test_ood_steps_exceed_every_train_step_count(splits):
    train_max = max(len(p.intermediates) for p in splits["train"])
    assert min(len(p.intermediates) for p in splits["ood_steps"]) > train_max


def test_ood_numbers_use_operands_outside_the_train_range(splits):
    train_max = max(int(n) for p in splits["train"] for n in NUM.findall(p.question))
    for p in splits["ood_numbers"]:
        assert max(int(n) for n in NUM.findall(p.question)) > train_max, p.question


def test_ood_template_uses_unseen_frames_and_phrasings(splits):
    train_text = " ".join(p.question for p in splits["train"])
    for p in splits["ood_template"]:
        assert not any(item in p.question for item in TRAIN_ITEMS)
        last_sentence = p.question[p.question.rindex(". ") + 2:]
        assert last_sentence.split(" ")[:3] not in [q.split(" ")[:3] for q in FINAL_QUESTIONS[:2]]
    for q in FINAL_QUESTIONS[2:]:
        assert q.split("{")[0] not in train_text


def test_ood_distractor_adds_exactly_one_number(splits):
    def givens(p):
        return len(NUM.findall(p.question))
    assert all(givens(p) == len(p.intermediates) + 1 for p in splits["train"])
    assert all(givens(p) == len(p.intermediates) + 2 for p in splits["ood_distractor"])

