"""
Rewards for stage 2 (ccrl.py): answer extraction, step segmentation, step checks, confidence of a
number, the CCRL and outcome rewards, and GRPO group advantages. Pure functions on text, token ids
and log-probs; none of them raises on arbitrary model output, and each reads any text in linear
time. `judge` is the one place a completion is judged: the training reward (ccrl.py), the
evaluation (evaluate.py) and the marked examples (comt/show.py) all read its record. Numbers are exact
rationals (Fraction), compared without tolerance.

The CCRL reward (our reconstruction; the paper's exact formula is not public):

    r = correct + lambda * T,   T = mean over the steps written and the gold steps never reached
        correct  1 if the final answer equals the gold answer, else 0
        c_s      the policy's confidence in step s's written result: an aggregate (geometric mean
                 by default, or min, or product) of the probabilities of that number's tokens
        z_s      1 if step s is judged right, else 0: its result is one of the gold intermediate
                 values (gold), its arithmetic recomputes (arith), or the final answer is right
                 (outcome); --step-check auto (the default) is gold where the problem has gold
                 intermediate values and arith where it has none
        term     signed: +c if right, -c if wrong, and 0 for a right step of a wrong answer;
                 brier: -(c - z)^2
        missing  the gold steps a completion never reaches (gold values beyond the number of
                 steps written) each count -1: a wrong step written with full confidence, the worst
                 term of either form
    A completion with no numeric step (and no gold steps to miss) gets T = -1, the worst either form
    can give. The outcome reward (the baseline) is `correct`. An optional format term (plan_weight,
    0 by default) subtracts plan_weight from either reward when the completion does not open with a
    digit-free plan, for RL that would otherwise learn to drop the plan.

Why T never pays an incomplete or wrong attempt: with a plain mean of +c/-c over the steps written,
a wrong answer whose few steps are right and confident earns up to +lambda, so stopping early pays
(seen: CCRL from a CoMT-SFT model shortened its plans, 26.5% -> 53% of them ending before the gold
program, and lost 8 points). Here a wrong answer's T is at most 0, and every step it leaves out
costs as much as a confident error, so among wrong answers the best is a complete attempt whose
wrong steps are written without confidence. With arith, a policy that rarely answers right learned
to write one self-consistent, confident step whatever the question ("apples collected = 12 + 7 =
19", +c); with a term of 0 for no steps, to write no numeric step at all. Both were seen in 60 CCRL
steps from a CoMT model at 2% accuracy.

Worked example (signed, lambda = 0.5): a three-step problem; the completion writes two steps,
confidences 0.9 (right) and 0.6 (wrong), and a wrong answer: T = (0 - 0.6 - 1) / 3 = -0.5333,
r = 0 + 0.5 * T = -0.2667. Brier: T = (-(0.1^2) - 0.6^2 - 1) / 3 = -0.4567, r = -0.2283. Had the
answer been right with both steps right (0.9, 0.6) and nothing missing: T = 0.75, r = 1.375.

Deviation from the paper: the paper names confidence on intermediate numeric tokens and a reward
that combines it with correctness; the aggregation, the step check, the signed/Brier forms,
averaging over steps, charging the steps never reached and paying nothing for a wrong answer's
right steps are our choices (the first four are switches).
"""
import math
import re
from dataclasses import dataclass
from fractions import Fraction

import torch

import comt  # noqa: F401  (first: on a Python older than 3.11 this stops in one line, not at a pattern below)
from comt.flags import NONNEG, flag

# -----------------------------------------------------------------------------
# Answers

NUM = r"[-+−]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?%?"
NUMBER = re.compile(NUM)
FINAL_LINE = re.compile(r"(?:Answer\s*:|####)\s*(.*)", re.IGNORECASE)
EXACT = re.compile(r"\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d{1,2})?\s*")  # exponents up to 99


def exact_number(s: str) -> Fraction | None:
    """The exact value of one plain number: '-1234', '0.75', '3/4', '1.5e3'; None if `s` is not one.
    Exact rationals, never floats: 126647307 and 126647407 differ, 0.1 + 0.2 is 0.3.

    >>> [str(exact_number(s)) for s in ["-1234", "0.10", "3/4", "1.5e3", "1e+20", "2/0", "3 4", "1e999"]]
    ['-1234', '1/10', '3/4', '1500', '100000000000000000000', 'None', 'None', 'None']
    """
    num, _, den = s.partition("/")
    if not EXACT.fullmatch(num) or (den and not den.strip().isdigit()):
        return None
    try:  # int() refuses numbers of over 4,300 digits (ValueError)
        value = Fraction(num.strip())
        return value / int(den) if den else value
    except (ValueError, ZeroDivisionError):
        return None


def number_text(x: Fraction) -> str:
    """Canonical text of an exact number: 12, -3, 2.5, 0.125; a fraction like 1/3 when no decimal
    ends it.

    >>> [number_text(Fraction(n, d)) for n, d in [(12, 1), (-6, 2), (5, 2), (1, 8), (1, 3)]]
    ['12', '-3', '2.5', '0.125', '1/3']
    """
    places, scale = 0, 1
    while scale % x.denominator and places <= x.denominator.bit_length():
        places, scale = places + 1, scale * 10
    if scale % x.denominator:
        return f"{x.numerator}/{x.denominator}"
    digits = str(abs(x.numerator) * (scale // x.denominator)).rjust(places + 1, "0")
    whole, frac = digits[:len(digits) - places], digits[len(digits) - places:].rstrip("0")
    return ("-" if x < 0 else "") + whole + ("." + frac if frac else "")


def parse_number(text: str) -> Fraction | None:
    """The first number in `text`, exactly, GSM8K quirks handled; None if there is none.

    >>> [str(parse_number(s)) for s in ["1,234", "$5.00", "-3", "72%", "3/4", "−2", "no", "1.5e3"]]
    ['1234', '5', '-3', '72', '3/4', '-2', 'None', '3/2']
    """
    m = NUMBER.search(text or "")
    if not m:
        return None
    text = m.group(0).replace("−", "-")
    for mark in "$,% ":
        text = text.replace(mark, "")
    return exact_number(text)


def extract_answer(text: str, lenient: bool = False) -> Fraction | None:
    """The final answer: the number on the last `Answer:` or `####` line (strict); with lenient,
    the last number in the text when there is no such line.

    >>> extract_answer("x = 2 + 3 = 5\\nAnswer: 5"), extract_answer("so 7 apples"), extract_answer("so 7", True)
    (Fraction(5, 1), None, Fraction(7, 1))
    """
    text = text or ""
    finals = FINAL_LINE.findall(text)
    if finals:
        return parse_number(finals[-1])
    if lenient:
        nums = NUMBER.findall(text)
        return parse_number(nums[-1]) if nums else None
    return None


def same_number(a: Fraction | float | None, b: Fraction | float | None) -> bool:
    """Exactly equal (no tolerance: a large answer one digit off is wrong)."""
    return a is not None and b is not None and a == b


def answer_correct(text: str, gold: str | float, lenient: bool = False) -> bool:
    return same_number(extract_answer(text, lenient), parse_number(str(gold)))


def has_plan(text: str) -> bool:
    """The completion opens with a plan: "Plan:", then at least one line without a digit, then the
    "Solution:" marker (the response format of comt/tasks.py).

    >>> has_plan("Plan:\\nFirst, add the a and the b.\\nSolution:\\nx = 1 + 2 = 3"), has_plan("Solution:\\nx = 3")
    (True, False)
    >>> has_plan("Plan:\\nFirst, add 1 and 2.\\nSolution:\\n"), has_plan("Plan:\\nFirst, add the a.")
    (False, False)
    """
    head, marker, _ = (text or "").lstrip().partition("Solution:")
    body = head.removeprefix("Plan:")
    return bool(marker) and body != head and bool(body.strip()) and not has_digit(body)


def has_digit(text: str) -> bool:
    """Any digit or other numeric character (3, ³, ½, ...): what a digit-free plan never holds."""
    return any(ch.isnumeric() for ch in text)


# -----------------------------------------------------------------------------
# Steps

# An arithmetic chain (`7 * 3`, `(48/2)`, `1,000 - 250`) and the `= result` that may follow it. The
# quantifiers are possessive and a chain may start only at "(", "-" or a digit, so nothing
# backtracks: segment_steps reads each character of any text a bounded number of times (linear time;
# a backtracking pattern for the same steps took exponential time on chains with no "= result").
OPERAND = r"-?\d[\d,]*+(?:\.\d+)?+"
CHAIN = re.compile(rf"(?:\(\s*+)?{OPERAND}(?P<ops>(?:\s*+[-+*/×x÷]\s*+(?:\(\s*+)?{OPERAND}\s*+\)?+)*+)")
RESULT = re.compile(r"\s*+=\s*+(?P<value>-?\$?\d[\d,]*+(?:\.\d+)?+)")
FRACTION_TAIL = re.compile(r"\.(\d+)\s*\)?$")


@dataclass
class Step:
    expr: str  # "21 + 2"
    value: Fraction  # the written result, 23
    span: tuple[int, int]  # character span of the written result in the text
    tokens: tuple[int, int] = (0, 0)  # token span [i, j) of the result (set by token_spans)


def segment_steps(text: str) -> list[Step]:
    """Every `expr = result` in the text, in order; `name = 7 * 3 = 21` and GSM8K's
    `48/2 = 24` alike. The expression needs at least one operator.

    >>> [(s.expr, s.value, s.span) for s in segment_steps("a = 7 * 3 = 21\\nb = 21 + 2 = 23")]
    [('7 * 3', Fraction(21, 1), (12, 14)), ('21 + 2', Fraction(23, 1), (28, 30))]
    """
    out, pos, text = [], 0, text or ""
    while chain := CHAIN.search(text, pos):
        pos = chain.end()
        result = RESULT.match(text, pos) if chain.group("ops") else None
        if result is None:  # no step here; a chain may still start in its last number's decimals
            tail = FRACTION_TAIL.search(chain.group())  # "1.1,000x23": 1,000x23 can be a step
            pos = chain.start() + tail.start(1) if tail else pos
            continue
        pos = result.end()
        value = parse_number(result.group("value"))
        if value is not None:
            out.append(Step(chain.group().strip(), value, result.span("value")))
    return out


def token_char_ends(tok, ids: list[int]) -> list[int]:
    """End offset, in the decoded text, of each token. Decoding token by token is exact unless a
    character spans tokens (byte-level pieces of one UTF-8 character); then prefixes are decoded."""
    pieces = [tok.decode([t]) for t in ids]
    ends, n = [], 0
    for p in pieces:
        n += len(p)
        ends.append(n)
    if n != len(tok.decode(ids)):
        ends = [len(tok.decode(ids[:i + 1])) for i in range(len(ids))]
    return ends


def span_tokens(span: tuple[int, int], char_ends: list[int]) -> tuple[int, int]:
    """The tokens [i, j) overlapping a character span ((0, 0) for none)."""
    a, b = span
    idx = [i for i, (st, en) in enumerate(zip([0] + char_ends[:-1], char_ends)) if st < b and en > a]
    return (idx[0], idx[-1] + 1) if idx else (0, 0)


def token_spans(steps: list[Step], char_ends: list[int]) -> list[Step]:
    """Set each step's token span: the tokens overlapping its result's characters."""
    for s in steps:
        s.tokens = span_tokens(s.span, char_ends)
    return steps


def safe_eval(expr: str) -> Fraction | None:
    """Evaluate + - * / ( ) over numbers, exactly; None for anything else or a division by zero.

    >>> [str(safe_eval(e)) for e in ["21 + 2", "48/2", "3 × 4", "10 / 4", "1/0", "2 ** 3"]]
    ['23', '24', '12', '5/2', 'None', 'None']
    """
    if len(expr) > 1000:  # longer than any step; deep nesting would exhaust the parser
        return None
    e = expr.replace(",", "").replace("×", "*").replace("x", "*").replace("÷", "/").replace("−", "-")
    if not re.fullmatch(r"[\d.\s+\-*/()]+", e) or "**" in e or "//" in e:
        return None
    try:  # only digits, operators and brackets reach here, each number as an exact Fraction
        exact = re.sub(r"[\d.]+", lambda m: f"F('{Fraction(m.group())}')", e)
        return Fraction(eval(exact, {"__builtins__": {}, "F": Fraction}, {}))
    except (ZeroDivisionError, SyntaxError, TypeError, ValueError, OverflowError, RecursionError, MemoryError):
        return None


def step_right(step: Step, check: str, gold_values: list[Fraction], answer_ok: bool) -> bool:
    """arith: the written result equals the recomputed expression; gold: it equals one of the
    gold intermediate values; outcome: the final answer's correctness; auto: gold when the problem
    has gold intermediate values, else arith."""
    if check == "auto":
        check = "gold" if gold_values else "arith"
    if check == "arith":
        return same_number(safe_eval(step.expr), step.value)
    if check == "gold":
        return any(same_number(step.value, g) for g in gold_values)
    if check == "outcome":
        return answer_ok
    raise ValueError(f"unknown step check {check!r}; choose auto, arith, gold or outcome")


# -----------------------------------------------------------------------------
# Confidence and rewards


def confidence(logprobs, agg: str = "geo") -> float:
    """Confidence of a number from the log-probs of its tokens: geo = exp(mean), min = exp(min),
    prod = exp(sum). Empty: 0.

    >>> round(confidence([math.log(0.9), math.log(0.4)]), 4), confidence([math.log(0.5)] * 2, "prod")
    (0.6, 0.25)
    """
    lp = [float(x) for x in logprobs]
    if not lp:
        return 0.0
    if agg == "geo":
        return math.exp(sum(lp) / len(lp))
    if agg == "min":
        return math.exp(min(lp))
    if agg == "prod":
        return math.exp(sum(lp))
    raise ValueError(f"unknown confidence aggregation {agg!r}; choose geo, min or prod")


def confidence_term(confs: list[float], rights: list[bool], form: str = "signed", missing: int = 0,
                    answer_ok: bool = True) -> float:
    """T of the header: the mean over the steps written and the `missing` gold steps never reached of
    +c / -c (signed; a right step of a wrong answer counts 0) or -(c - z)^2 (brier), a missing step
    counting -1; without any step -1, the worst value of either form, so that showing no numeric
    step never pays more than showing wrong ones.

    >>> confidence_term([0.9, 0.6], [True, False]), confidence_term([0.9, 0.6], [True, False], "brier")
    (0.15000000000000002, -0.185)
    >>> round(confidence_term([0.9, 0.6], [True, False], missing=1, answer_ok=False), 4), confidence_term([], [])
    (-0.5333, -1.0)
    """
    if form == "signed":
        terms = [(c if answer_ok else 0.0) if z else -c for c, z in zip(confs, rights)]
    elif form == "brier":
        terms = [-(c - float(z)) ** 2 for c, z in zip(confs, rights)]
    else:
        raise ValueError(f"unknown confidence form {form!r}; choose signed or brier")
    terms += [-1.0] * missing
    return sum(terms) / len(terms) if terms else -1.0


def answer_span(text: str) -> tuple[int, int] | None:
    """Character span of the answer's number: on the last `Answer:`/`####` line, else the last
    number of the text; None without a number.

    >>> answer_span("x = 2 + 3 = 5\\nAnswer: 5"), answer_span("so 7 apples"), answer_span("none")
    ((22, 23), (3, 4), None)
    """
    finals = list(FINAL_LINE.finditer(text))
    m = NUMBER.search(text, finals[-1].start(1)) if finals else ([None] + list(NUMBER.finditer(text)))[-1]
    if m is None:
        return None
    a, b = m.span()
    return a + len(m.group()) - len(m.group().lstrip()), b  # the pattern may take a space before the digits


@dataclass(frozen=True)
class RewardSettings:
    """The one record of how completions are judged and rewarded; its fields are ccrl.py's flags
    (add_flags puts them on a parser: evaluate.py's --conf-agg and --step-check are two of them). ccrl.py
    judges every sample with it and saves it with the run's arguments; evaluate.py reads it back."""
    reward: str = flag("ccrl", "ccrl: correctness + confidence term; outcome: correctness only (the baseline)",
                       choices=("ccrl", "outcome"))
    conf_weight: float = flag(0.5, "lambda, the weight of the confidence term", type=NONNEG)
    conf_form: str = flag("signed", "+c/-c or -(c-z)^2", choices=("signed", "brier"))
    conf_agg: str = flag("geo", "confidence of a number from its tokens' probabilities", choices=("geo", "min", "prod"))
    step_check: str = flag("auto", "a step is right if its result is a gold intermediate (gold; auto where the "
                           "problem has them) / its arithmetic recomputes (arith; auto otherwise) / the final answer is "
                           "right (outcome)", choices=("auto", "arith", "gold", "outcome"))
    plan_weight: float = flag(0.0, "format term of both rewards: subtract this from a completion that does not open "
                              "with a digit-free plan", type=NONNEG)


@dataclass
class Judgement:
    """Everything the project measures on one completion, in one place."""
    correct: bool  # the number on the last Answer:/#### line equals the gold answer
    correct_lenient: bool  # or, without such a line, the last number does
    answer_conf: float  # confidence of the answer's number (0 without one)
    plan: bool  # opens with a digit-free plan (has_plan)
    steps: list[Step]  # each `expr = result`, with the token span [i, j) its confidence read
    step_confs: list[float]
    step_rights: list[bool]
    conf_term: float  # T: the mean over steps written and gold steps missed (rewards' header); -1 without steps
    reward: float  # correct (+ conf_weight * conf_term for ccrl) + plan_part
    scoring: RewardSettings  # what it was judged with
    plan_part: float  # -plan_weight for a completion without a plan, else 0
    text: str  # the completion judged
    char_ends: list[int]  # end offset in text of each of its tokens (token_char_ends); one per token

    @property
    def tokens(self) -> int:
        return len(self.char_ends)


def judge(text: str, token_logprobs: list[float], char_ends: list[int], gold_answer: str, gold_values: list[Fraction],
          scoring: RewardSettings) -> Judgement:
    """Judge one completion: its text, the log-prob of each of its tokens and each token's end
    offset in the text (token_char_ends), with `scoring` (RewardSettings). The format term,
    -plan_weight for a completion that does not open with a digit-free plan (has_plan), 0 for one
    that does, is added to either reward. The training reward (ccrl.py), the evaluation (evaluate.py)
    and the marked examples (comt/show.py) all read this record."""
    s = scoring
    ok = answer_correct(text, gold_answer)
    steps = token_spans(segment_steps(text), char_ends)
    confs = [confidence(token_logprobs[st.tokens[0]:st.tokens[1]], s.conf_agg) for st in steps]
    rights = [step_right(st, s.step_check, gold_values, ok) for st in steps]
    term = confidence_term(confs, rights, s.conf_form, missing=max(0, len(gold_values) - len(steps)), answer_ok=ok)
    if s.reward == "outcome":
        r = float(ok)
    elif s.reward == "ccrl":
        r = float(ok) + s.conf_weight * term
    else:
        raise ValueError(f"unknown reward {s.reward!r}; choose ccrl or outcome")
    plan = has_plan(text)
    plan_part = -s.plan_weight if s.plan_weight and not plan else 0.0
    r += plan_part
    span = answer_span(text)
    a, b = span_tokens(span, char_ends) if span else (0, 0)
    answer_conf = confidence(token_logprobs[a:b], s.conf_agg) if b > a else 0.0
    return Judgement(ok, answer_correct(text, gold_answer, lenient=True), answer_conf, plan, steps, confs, rights,
                     term, r, s, plan_part, text, char_ends)


def judge_completion(tok, ids: list[int], logprobs: list[float], problem, scoring: RewardSettings) -> Judgement:
    """judge() of a generated completion: its token ids decoded without special tokens (the stop
    token), against the problem's answer and gold intermediate values. Every completion the
    project samples or decodes greedily is judged here, once."""
    text = tok.decode(ids, skip_special_tokens=True)
    return judge(text, logprobs, token_char_ends(tok, ids), problem.answer, problem.intermediates, scoring)


def step_stats(confs: list[list[float]], rights: list[list[bool]], threshold: float) -> dict:
    """Mean confidence of right and wrong steps; overconfident-error rate = share of all steps
    that are wrong with confidence above the threshold.

    >>> step_stats([[0.95, 0.5], [0.99]], [[True, False], [False]], 0.9)
    {'conf_right': 0.95, 'conf_wrong': 0.745, 'overconf_err': 0.3333333333333333}
    """
    pairs = [(c, z) for cs, zs in zip(confs, rights) for c, z in zip(cs, zs)]
    right = [c for c, z in pairs if z]
    wrong = [c for c, z in pairs if not z]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
    return dict(conf_right=mean(right), conf_wrong=mean(wrong),
                overconf_err=sum(c > threshold for c in wrong) / len(pairs) if pairs else float("nan"))


# -----------------------------------------------------------------------------
# Groups


def group_advantages(rewards: torch.Tensor, mode: str = "zscore", eps: float = 1e-6) -> torch.Tensor:
    """(P,G) rewards of P groups of G samples -> (P,G) advantages: r - mean (mean), or
    (r - mean) / (std + eps) with the population std (zscore). A group with no spread gets 0.

    >>> r = torch.tensor([[1., 0.], [2., 2.]])
    >>> group_advantages(r).round(decimals=4).tolist(), group_advantages(r, "mean").tolist()
    ([[1.0, -1.0], [0.0, 0.0]], [[0.5, -0.5], [0.0, 0.0]])
    """
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if mode == "mean":
        return centred
    if mode == "zscore":
        std = rewards.std(dim=1, unbiased=False, keepdim=True)
        return torch.where(std > 0, centred / (std + eps), torch.zeros_like(centred))
    raise ValueError(f"unknown advantage mode {mode!r}; choose zscore or mean")


def mixed_groups(correct: torch.Tensor) -> torch.Tensor:
    """(P,G) binary correctness -> (P,) True where the group has both right and wrong answers.
    Filtering uses correctness, never the shaped reward: a CCRL reward gives an all-wrong group a
    spread (and a phantom gradient) through its confidence term alone.

    >>> mixed_groups(torch.tensor([[1, 0], [1, 1], [0, 0]])).tolist()
    [True, False, False]
    """
    c = correct.float().mean(dim=1)
    return (c > 0) & (c < 1)
