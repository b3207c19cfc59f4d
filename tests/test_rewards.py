import contextlib
import math
import random
import re
import signal

import pytest
import torch

from rewards import (RewardSettings, answer_correct, confidence, confidence_term, extract_answer, group_advantages,
                     judge, mixed_groups, parse_number, safe_eval, segment_steps, step_right, token_char_ends,
                     token_spans)

EXTRACTION = [  # (text, strict, lenient)
    ("Answer: 42", 42, 42),
    ("Answer: -7", -7, -7),
    ("Answer: 1,234", 1234, 1234),
    ("Answer: $1,234.00", 1234, 1234),
    ("Answer: 5.00", 5, 5),
    ("Answer: 12.5", 12.5, 12.5),
    ("Answer: 75%", 75, 75),
    ("Answer: 3/4", 0.75, 0.75),
    ("Answer: $ 18", 18, 18),
    ("answer: 9", 9, 9),
    ("Answer:12", 12, 12),
    ("Answer: 18 apples", 18, 18),
    ("Answer: The total is 30.", 30, 30),
    ("#### 72", 72, 72),
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", 72, 72),
    ("#### 1,000,000", 1000000, 1000000),
    ("Answer: 3\nAnswer: 4", 4, 4),
    ("x = 2 + 3 = 5\nAnswer: 5", 5, 5),
    ("x = 2 + 3 = 5\nAnswer: 6\nmore text 9", 6, 6),
    ("Answer: −3", -3, -3),
    ("Answer: +8", 8, 8),
    ("Answer: 0", 0, 0),
    ("Answer: 007", 7, 7),
    ("Answer: 0.5", 0.5, 0.5),
    ("Answer: none", None, None),
    ("Answer:", None, None),
    ("The answer is 17", None, 17),
    ("so she has 3 left, then 11 more", None, 11),
    ("He pays $2,500 in total", None, 2500),
    ("", None, None),
    ("no numbers at all", None, None),
    ("apples = 7 * 3 = 21", None, 21),
    ("1/2 of them", None, 0.5),
    ("Answer: 10 / 0", None, None),  # not a number
    ("The price rose 20%", None, 20),
]


@pytest.mark.parametrize("text,strict,lenient", EXTRACTION)
def test_answer_extraction(text, strict, lenient):
    assert extract_answer(text) == strict
    assert extract_answer(text, lenient=True) == lenient


def test_answers_are_compared_exactly():
    # a tolerance would take a nine-digit answer one digit off, or a rounding of 1/3, as right
    assert not answer_correct("Answer: 126647407", "126647307") and answer_correct("Answer: 126,647,307", "126647307")
    assert not answer_correct("Answer: 0.333333", "1/3") and answer_correct("Answer: 1/3", "1/3")
    assert answer_correct("Answer: 0.30", "0.3") and not answer_correct("Answer: 0.3000001", "0.3")
    assert answer_correct("Answer: 100000000000000000001", "100000000000000000001")
    assert not answer_correct("Answer: 100000000000000000000", "100000000000000000001")


def test_arithmetic_steps_are_recomputed_exactly():
    assert safe_eval("0.1 + 0.2") == parse_number("0.3")  # in floats 0.30000000000000004
    assert safe_eval("10 / 3 * 3") == 10 and safe_eval("123456789 * 987654321") == 121932631112635269
    assert [step_right(s, "arith", [], False) for s in segment_steps("a = 0.1 + 0.2 = 0.3\nb = 10 / 3 = 3.33")] == \
        [True, False]
    assert [step_right(s, "gold", [parse_number("3.33")], False) for s in segment_steps("b = 10 / 3 = 3.33")] == [True]


def test_answer_correct_compares_numbers():
    assert answer_correct("Answer: 1,200.00", "1200") and answer_correct("Answer: 0.5", "1/2")
    assert not answer_correct("Answer: 12", "13") and not answer_correct("the answer is 12", "12")
    assert answer_correct("the answer is 12", "12", lenient=True)


def test_segmentation_finds_results_and_expressions():
    text = "apples in the bags = 7 * 3 = 21\napples after buying = 21 + 2 = 23\nAnswer: 23"
    steps = segment_steps(text)
    assert [(s.expr, s.value) for s in steps] == [("7 * 3", 21), ("21 + 2", 23)]
    assert [text[a:b] for a, b in (s.span for s in steps)] == ["21", "23"]
    gsm = "She sold 48/2 = <<48/2=24>>24 clips and 1,000 - 250 = 750 more."
    assert [(s.expr, s.value) for s in segment_steps(gsm)] == [("48/2", 24), ("1,000 - 250", 750)]
    assert segment_steps("x = 5\nAnswer: 5") == []


# the step pattern as it was first written: the same language, read with backtracking
BACKTRACKING_STEP = re.compile(r"(?P<expr>\(?\s*-?\d[\d,]*(?:\.\d+)?(?:\s*[-+*/×x÷]\s*\(?\s*-?\d[\d,]*(?:\.\d+)?\s*\)?)+)"
                               r"\s*=\s*(?P<value>-?\$?\d[\d,]*(?:\.\d+)?)")


def test_segmentation_agrees_with_the_backtracking_pattern_on_random_text():
    rng = random.Random(0)
    numbers = ["1", "23", "4,0", "1,000", ".5", "2.5", "-7", "$3", "(6", "8)", "( 9 )"]
    between = [" + ", "+", " - ", "-", " * ", "x", " × ", "/", " = ", "=", " ", "  ", "(", ")", " a ", "\n", "."]
    for _ in range(10000):  # mostly alternating numbers and operators, so steps and near-misses are common
        pieces = [rng.choice(numbers if (i % 2 == 0) != (rng.random() < 0.15) else between)
                  for i in range(rng.randint(1, 16))]
        text = "".join(pieces)
        want = [(m.group("expr").strip(), m.span("value")) for m in BACKTRACKING_STEP.finditer(text)
                if parse_number(m.group("value")) is not None]
        assert [(s.expr, s.span) for s in segment_steps(text)] == want, text


@contextlib.contextmanager
def time_bound(seconds: int):
    """Fail the test when the block runs longer (SIGALRM): a guard against runaway parsing, not a timing."""
    def fail(*_):
        raise TimeoutError(f"still parsing after {seconds} s")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


ADVERSARIAL = {  # a million characters each: linear parsing reads them in about a second, a quadratic
    "operators": "1 + " * 250_000,  # parser in hours, the old backtracking pattern never (2^n in the operators)
    "addends": "We add " + " + ".join(map(str, range(150_000))) + " and get nothing.",
    "brackets": "(" * 250_000 + " 1 " * 250_000,
    "digits": "9" * 1_000_000,
    "decimals": "1." * 500_000,
    "answers": "Answer: " * 125_000,
    "equals": "= 1 " * 250_000,
    "commas": "1," * 500_000 + " = 3",
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_adversarial_text_is_parsed_in_linear_time(name):
    text = ADVERSARIAL[name]
    with time_bound(60):
        s = judge(text, [-0.1] * len(text), list(range(1, len(text) + 1)), "3", [3], RewardSettings())
        extract_answer(text, lenient=True)
    assert s.step_confs == [] and math.isfinite(s.reward)


def test_a_step_too_long_to_recompute_is_judged_wrong_not_raised():
    long_sum = " + ".join(["1"] * 200_000) + " = 200000"
    with time_bound(60):
        steps = segment_steps(long_sum)
    assert [s.value for s in steps] == [200000] and safe_eval(steps[0].expr) is None
    assert not step_right(steps[0], "arith", [], False)


def digit_bpe():
    """A BPE tokenizer that merges digits (like GPT-2 / Llama-3 number chunks), not our tiny one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    docs = [f"total = {a} + {b} = {a + b}" for a in range(100, 400, 7) for b in range(10, 90, 13)]
    tok.train_from_iterator(docs, trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok)


@pytest.mark.parametrize("which", ["tiny", "merging_bpe"])
def test_token_spans_cover_exactly_the_result(which, tok):
    tok = tok if which == "tiny" else digit_bpe()
    text = "total = 123 + 45 = 168\ntotal = 168 * 2 = 336\nAnswer: 336"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    steps = token_spans(segment_steps(text), token_char_ends(tok, ids))
    for s, want in zip(steps, ["168", "336"]):
        assert tok.decode(ids[s.tokens[0]:s.tokens[1]]).strip() == want
    if which == "tiny":  # one token per digit
        assert [s.tokens[1] - s.tokens[0] for s in steps] == [3, 3]


def test_safe_eval_only_arithmetic():
    assert safe_eval("(2 + 3) * 4") == 20 and safe_eval("7 - 10") == -3 and safe_eval("9 / 4") == 2.25
    assert safe_eval("__import__('os')") is None and safe_eval("2 ** 100") is None and safe_eval("5 / 0") is None
    assert safe_eval("(" * 300 + "1" + ")" * 300) is None  # too deep for the parser: None, not an exception
    assert safe_eval(" + ".join(["1"] * 200)) == 200


def test_confidence_aggregations_by_hand():
    lp = [math.log(0.9), math.log(0.4)]
    assert confidence(lp, "geo") == pytest.approx(0.6)  # sqrt(0.36)
    assert confidence(lp, "min") == pytest.approx(0.4)
    assert confidence(lp, "prod") == pytest.approx(0.36)
    assert confidence([], "geo") == 0.0


def test_confidence_terms_by_hand():
    assert confidence_term([0.9, 0.6], [True, False], "signed") == pytest.approx((0.9 - 0.6) / 2)
    assert confidence_term([0.9, 0.6], [True, False], "brier") == pytest.approx(-(0.01 + 0.36) / 2)
    assert confidence_term([0.8], [True], "brier") == pytest.approx(-0.04)
    assert confidence_term([], [], "signed") == confidence_term([], [], "brier") == -1.0  # no step: the worst
    # a wrong answer's right steps count 0 (signed); each gold step never reached counts -1
    assert confidence_term([0.9, 0.6], [True, False], answer_ok=False) == pytest.approx(-0.6 / 2)
    assert confidence_term([0.9, 0.6], [True, False], missing=1, answer_ok=False) == pytest.approx((0 - 0.6 - 1) / 3)
    assert confidence_term([0.9, 0.6], [True, False], "brier", missing=1) == pytest.approx((-0.01 - 0.36 - 1) / 3)
    assert confidence_term([], [], missing=2) == -1.0


def scored(text, probs, reward="ccrl", gold_answer="", gold_values=(), **settings):
    """Score text whose every character is one token with the given probability (default 1), with
    RewardSettings(reward=reward, **settings)."""
    lps = [math.log(probs.get(i, 1.0)) for i in range(len(text))]
    return judge(text, lps, list(range(1, len(text) + 1)), gold_answer, list(gold_values),
                 RewardSettings(reward=reward, **settings))


# "a = 2 + 3 = 5\nb = 5 * 4 = 21\nAnswer: 21": result "5" is char 12, result "21" chars 26-27.
TEXT = "a = 2 + 3 = 5\nb = 5 * 4 = 21\nAnswer: 21"
PROBS = {12: 0.9, 26: 0.5, 27: 0.8}  # confidences: 0.9 (right step), sqrt(0.4) = 0.632456 (wrong step)


def test_every_reward_variant_by_hand():
    c2 = math.sqrt(0.4)
    s = scored(TEXT, PROBS, gold_answer="21", gold_values=[5, 20], conf_weight=0.5)
    assert s.correct and s.step_rights == [True, False]
    assert s.step_confs == pytest.approx([0.9, c2])
    assert s.reward == pytest.approx(1 + 0.5 * (0.9 - c2) / 2)  # 1.066886
    s = scored(TEXT, PROBS, gold_answer="20", gold_values=[5, 20], conf_weight=0.5, conf_form="brier")
    assert not s.correct and s.reward == pytest.approx(0.5 * (-(0.1 ** 2) - c2 ** 2) / 2)  # -0.1025
    s = scored(TEXT, PROBS, gold_answer="21", gold_values=[5, 21], conf_weight=1.0, step_check="gold", conf_agg="min")
    assert s.step_rights == [True, True] and s.reward == pytest.approx(1 + (0.9 + 0.5) / 2)
    s = scored(TEXT, PROBS, gold_answer="20", gold_values=[5, 21], conf_weight=1.0, step_check="gold", conf_agg="min")
    assert s.step_rights == [True, True] and s.reward == 0.0  # right steps pay nothing to a wrong answer
    s = scored(TEXT, PROBS, gold_answer="20", gold_values=[], conf_weight=1.0, step_check="outcome", conf_agg="prod")
    assert s.step_rights == [False, False] and s.reward == pytest.approx((-0.9 - 0.4) / 2)
    assert scored(TEXT, PROBS, "outcome", gold_answer="21", gold_values=[]).reward == 1.0
    assert scored(TEXT, PROBS, "outcome", gold_answer="20", gold_values=[]).reward == 0.0
    assert scored("Answer: 7", {}, gold_answer="7", gold_values=[]).reward == 0.5  # no steps: 1 + 0.5 * -1


# A three-step problem (gold values 5, 20, 40; answer 40) and hand-built completions of it.
FULL = "a = 2 + 3 = 5\nb = 5 * 4 = 20\nc = 20 * 2 = 40\nAnswer: 40"
STOPPED = "a = 2 + 3 = 5\nb = 5 * 4 = 20\nAnswer: 20"  # right steps, one step short
SLIP = "a = 2 + 3 = 5\nb = 5 * 4 = 21\nc = 21 * 2 = 42\nAnswer: 42"  # a confident slip that carries on


def test_an_incomplete_attempt_is_never_paid():
    kw = dict(gold_answer="40", gold_values=[5, 20, 40], conf_weight=0.5)
    full, stopped, slip = scored(FULL, {}, **kw), scored(STOPPED, {}, **kw), scored(SLIP, {}, **kw)
    assert full.reward == pytest.approx(1 + 0.5 * 1.0)  # three right steps at confidence 1
    assert stopped.conf_term == pytest.approx((0 + 0 - 1) / 3) and stopped.reward == pytest.approx(-0.5 / 3)
    assert slip.conf_term == pytest.approx((0 - 1 - 1) / 3) and slip.reward == pytest.approx(-1 / 3)
    # leaving two steps out costs what two errors written with full confidence cost
    one = scored("a = 2 + 3 = 5\nAnswer: 5", {}, **kw)
    assert one.conf_term == pytest.approx(slip.conf_term) == pytest.approx(-2 / 3)
    # the same slip written with little confidence costs little: calibration is what a wrong answer can earn
    unsure = scored(SLIP, {i: 0.1 for i in range(len(SLIP)) if i >= SLIP.index("= 21") + 2}, **kw)
    assert unsure.step_confs[1:] == pytest.approx([0.1, 0.1]) and unsure.reward == pytest.approx(0.5 * -0.2 / 3)
    # brier charges a missing step -1 as well
    assert scored(STOPPED, {}, conf_form="brier", **kw).conf_term == pytest.approx(-1 / 3)


def test_plan_term_costs_only_completions_without_a_plan():
    planned = "Plan:\nFirst, add the a and the b.\nSolution:\n" + TEXT
    for reward, base in (("outcome", 1.0), ("ccrl", 1 + 0.5 * (0.9 - math.sqrt(0.4)) / 2)):
        kw = dict(gold_answer="21", gold_values=[5, 20], conf_weight=0.5)
        assert scored(TEXT, PROBS, reward, plan_weight=0.25, **kw).reward == pytest.approx(base - 0.25)
        shifted = {i + len(planned) - len(TEXT): p for i, p in PROBS.items()}
        assert scored(planned, shifted, reward, plan_weight=0.25, **kw).reward == pytest.approx(base)
    digits = "Plan:\nFirst, add 2 and 3.\nSolution:\nAnswer: 5"
    assert scored(digits, {}, "outcome", gold_answer="5", gold_values=[], plan_weight=0.25).reward == 0.75


def test_auto_step_check_is_gold_with_gold_values_else_arith():
    # b = 5 * 4 = 21: wrong arithmetic, but 21 is a gold value in the first call
    assert scored(TEXT, PROBS, gold_answer="21", gold_values=[5, 21], step_check="auto").step_rights == [True, True]
    assert scored(TEXT, PROBS, gold_answer="21", gold_values=[], step_check="auto").step_rights == [True, False]
    # a self-consistent step that is no gold value is wrong under auto when gold values exist
    assert scored("c = 12 + 7 = 19\nAnswer: 19", {}, gold_answer="27", gold_values=[15, 27]).step_rights == [False]


def test_advantages_by_hand():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [2.0, 0.0, 1.0, 1.0]])
    z = group_advantages(r, "zscore", eps=0.0)
    assert z[0].tolist() == [1.0, -1.0, -1.0, 1.0]
    assert z[1].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert z[2].tolist() == pytest.approx([2 ** 0.5, -(2 ** 0.5), 0.0, 0.0])  # std sqrt(0.5)
    assert group_advantages(r, "mean")[2].tolist() == [1.0, -1.0, 0.0, 0.0]
    assert group_advantages(r[1:2], "zscore").tolist() == [[0.0, 0.0, 0.0, 0.0]]


def test_filter_uses_binary_correctness_not_shaped_reward():
    correct = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 1]])
    shaped = torch.tensor([[-0.3, 0.1, -0.2], [1.1, -0.2, 0.0], [1.2, 1.0, 1.1]])  # every group has spread
    assert (group_advantages(shaped, "mean").abs().sum(1) > 0).all()
    assert mixed_groups(correct).tolist() == [False, True, False]


def test_rewards_never_raise_on_arbitrary_text():
    rng = random.Random(0)
    alphabet = "0123456789 +-*/=.,$%#:Answer\n()xé€😀−×÷"
    texts = ["", "=", "= =", "1 = =", "Answer: ", "#### ", "1/0 = 3", "9" * 400 + " + 1 = 2", "(((1 + = 2"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(300)]
    for t in texts:
        lps = [-0.1] * len(t)
        for kw in (dict(), dict(conf_form="brier", conf_agg="min", step_check="gold"), dict(reward="outcome", step_check="outcome")):
            s = judge(t, lps, list(range(1, len(t) + 1)), "3", [3.0], RewardSettings(**kw))
            assert math.isfinite(s.reward)
        extract_answer(t, lenient=True)


def test_docstring_examples_hold():
    import doctest

    import rewards
    assert doctest.testmod(rewards).failed == 0
