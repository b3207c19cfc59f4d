"""
Problems: the record every stage reads, the embedded synthetic world, the text formats every stage
uses, and the programs that judge a plan.

The synthetic world
-------------------
Every problem is a small program: a chain of 2-5 binary steps over +, -, *, exact /. The first
step combines two given numbers, each later step combines the running quantity with one new given
number, and every step's result is a named quantity ("apples after buying"). A story frame (a
person, an item, containers, people to share with) and one phrasing per event render it as a word
problem. From the same program come
    plan      the meta-thought: one line per step naming quantities, no digits at all
              ("Second, add the apples in the bags and the apples bought to get the apples after buying.")
    solution  the execution: one line per step, `name = x op y = result`
    answer    the last step's result; `intermediates` holds every step's result in order.

Splits (each a recipe; sizes are arguments, generation is deterministic by (seed, split, n)):
    train, val, test
                    train frames and phrasings, 2-5 steps, train number ranges (starts <= 20, added or
                    removed numbers <= 9, factors and divisors 2-9, every intermediate <= 99), no
                    distractor. A stable hash of the question's text puts it in test (one tenth), val
                    (one tenth: problems to choose settings on) or train, so the three never share a
                    question whatever their sizes.
    ood_template    frames (people, items, containers) and phrasings of every event and of the final
                    question that train never uses
    ood_steps       6-7 steps (train has at most 5)
    ood_numbers     starts 21-200 and added or removed numbers 10-99 (train: <= 20 and <= 9),
                    intermediates up to 999 (train: 99); factors and divisors stay one digit (2-9),
                    as in train. Changed from factors 10-20, added or removed numbers up to 200 and
                    intermediates up to 9,999, which the shipped base could not compute even from
                    the gold plan: a model of the default's size does not learn a 3-digit x 2-digit
                    product in one line, and learned 3-digit +/- 3-digit lines far more slowly than
                    3-digit +/- 2-digit ones (held-out accuracy 7% against 85% after the same 3,000
                    steps of arithmetic). The point stays large numbers, as in GSM-Hard.
    ood_distractor  a train-like problem plus one irrelevant sentence with a number (GSM-NoOp style)
No question text appears in two splits: the OOD recipes differ from train in words, step counts or
numbers, and train/val/test are split by hash. Post-training (sft_comt.py, ccrl.py) sees only the
train recipe, so every OOD split is out of distribution for it; the base model's pretraining corpus
(base.py) covers the whole world (every frame's nouns and every phrasing, up to 7 steps, the OOD
number ranges, distractors) but never a question of any split.

Text formats (our reconstruction; the paper's formats are not public)
    prompt    "Question: <question>\n"
    comt      "Plan:\n<plan>\nSolution:\n"                    (CoMT-SFT target; execution follows)
    cot       comt + "<solution>\nAnswer: <answer>"            (CoT-SFT target, then the stop token)
The CoT target is the complete trajectory and the CoMT target its abstract prefix, so both arms
write the same text at test time and differ only in whether the execution is supervised.
The base's own plan forms (its pretraining text, never a post-training target) are comt/corpus.py's;
real benchmarks and the files a user hands in are comt/benchmarks.py's.
"""
import hashlib
import random
import re
import sys
from dataclasses import dataclass, field
from fractions import Fraction

from rewards import number_text

# -----------------------------------------------------------------------------
# Records and text formats


@dataclass
class Problem:
    id: str
    question: str
    answer: str  # canonical number: no commas/units, integers without ".0"
    split: str = ""
    plan: str | None = None  # meta-thought, no digits
    solution: str | None = None  # execution, or a benchmark's gold worked solution
    intermediates: list[Fraction] = field(default_factory=list)  # gold value of each step, exact
    source: str = "synthetic"


def prompt_text(p: Problem) -> str:
    return f"Question: {p.question}\n"


def comt_target(p: Problem) -> str:
    """CoMT target: the plan and the marker that opens the execution (nothing after it)."""
    return f"Plan:\n{p.plan}\nSolution:\n"


def cot_text(p: Problem) -> str:
    """CoT target: the complete trajectory, i.e. the CoMT target, then the execution and the answer
    line (the stop token follows)."""
    return f"{comt_target(p)}{p.solution}\nAnswer: {p.answer}"


def encode_prompt(tok, p: Problem) -> list[int]:
    """Prompt token ids. A tokenizer with a chat template gets the question as the user turn and
    the opening of the assistant turn (targets then follow inside that turn); otherwise
    prompt_text, with the tokenizer's BOS if it adds one."""
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template([{"role": "user", "content": prompt_text(p).strip()}], tokenize=False,
                                       add_generation_prompt=True)
        return tok(text, add_special_tokens=False)["input_ids"]
    return tok(prompt_text(p))["input_ids"]


def fitting(items: list, lengths: list[int], limit: int, what: str) -> list:
    """The items whose token length is at most `limit` (the model's context); the others are skipped
    with a count on stderr. None left is an error."""
    keep = [x for x, n in zip(items, lengths) if n <= limit]
    if not keep:
        raise SystemExit(f"none of the {len(items)} {what} fits in the model's {limit} tokens")
    if len(keep) < len(items):
        print(f"skipped {len(items) - len(keep)} of {len(items)} {what}: longer than the {limit} tokens the model "
              f"reads", file=sys.stderr, flush=True)
    return keep


def prompts_that_fit(tok, problems: list[Problem], max_new_tokens: int, context: int, what: str) -> list[Problem]:
    """The problems whose prompt plus max_new_tokens fits the model's context; the others are skipped
    with a count on stderr."""
    lengths = [len(encode_prompt(tok, p)) + max_new_tokens for p in problems]
    return fitting(problems, lengths, context, f"{what} (prompt + --max-new-tokens)")


def encode_example(tok, p: Problem, fmt: str) -> tuple[list[int], list[bool]]:
    """(ids, supervised) for SFT: prompt + target, supervised True on target tokens only.
    comt: the plan and the opening "Solution:" marker, no stop token (the execution follows).
    cot:  the same, then the solution, the answer line and the stop token (tok.eos_token_id)."""
    if fmt not in ("comt", "cot"):
        raise ValueError(f"unknown format {fmt!r}; choose comt or cot")
    prompt = encode_prompt(tok, p)
    target = tok(comt_target(p), add_special_tokens=False)["input_ids"]
    if fmt == "cot":  # the CoMT target's tokens exactly, then the execution's: one is a prefix of the other
        execution = cot_text(p).removeprefix(comt_target(p))
        target += tok(execution, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return prompt + target, [False] * len(prompt) + [True] * len(target)


# -----------------------------------------------------------------------------
# The synthetic world: frames, events, phrasings


@dataclass(frozen=True)
class Frame:
    people: tuple  # names
    item: str  # plural noun
    group: tuple  # (singular, plural) container
    mates: tuple  # (singular, plural) people to share with

    def slots(self) -> dict:
        """Template slots: {item}, {group}, {groups}, {mate}, {mates}."""
        return dict(item=self.item, group=self.group[0], groups=self.group[1], mate=self.mates[0],
                    mates=self.mates[1])


TRAIN_FRAMES = (
    Frame(("Mia", "Leo", "Ava", "Noah"), "apples", ("bag", "bags"), ("friend", "friends")),
    Frame(("Nora", "Omar", "Lily"), "muffins", ("tray", "trays"), ("neighbor", "neighbors")),
    Frame(("Sam", "Ella", "Ben"), "stickers", ("sheet", "sheets"), ("classmate", "classmates")),
    Frame(("Zoe", "Max", "Ivy"), "marbles", ("jar", "jars"), ("cousin", "cousins")),
    Frame(("Ruby", "Finn", "Maya"), "books", ("shelf", "shelves"), ("student", "students")),
    Frame(("Owen", "Chloe", "Eli"), "pencils", ("box", "boxes"), ("teammate", "teammates")),
    Frame(("Anna", "Jack", "Rosa"), "cookies", ("plate", "plates"), ("guest", "guests")),
    Frame(("Hugo", "Lucy", "Theo"), "flowers", ("vase", "vases"), ("aunt", "aunts")),
)
OOD_FRAMES = (
    Frame(("Priya", "Tomas", "Keiko"), "seashells", ("bucket", "buckets"), ("diver", "divers")),
    Frame(("Darius", "Freya", "Mateo"), "coins", ("purse", "purses"), ("sailor", "sailors")),
    Frame(("Yara", "Bruno", "Sofia"), "lanterns", ("crate", "crates"), ("villager", "villagers")),
)

# Events. Each: op, the result-name pattern, the name of its given number, and phrasings
# (train phrasings first; the last one is held out for ood_template). Slots: {P} subject,
# {n} the given number, {item}, {group}/{groups}, {mate}/{mates}.
START_EVENTS = (
    ("*", "{item} in the {groups}", ("the number of {groups}", "the {item} per {group}"),
     ("{P} has {a} {groups} with {b} {item} in each {group}.",
      "{P} fills {a} {groups}, putting {b} {item} in every {group}.",
      "There are {a} {groups} in front of {P}, and each {group} holds {b} {item}.")),
    ("+", "{item} collected", ("the morning {item}", "the afternoon {item}"),
     ("{P} collects {a} {item} in the morning and {b} {item} in the afternoon.",
      "In the morning {P} gathers {a} {item}, and in the afternoon {b} more.",
      "{P} ends the morning with {a} {item} and adds {b} {item} before dinner.")),
)
CHAIN_EVENTS = (
    ("+", "buying", "the {item} bought",
     ("{P} buys {n} more {item}.", "Then {P} buys another {n} {item}.", "After that, {P} purchases {n} extra {item}.")),
    ("+", "finding", "the {item} found",
     ("{P} finds {n} more {item}.", "Later {P} finds {n} {item} on the way home.", "Then {P} discovers {n} more {item}.")),
    ("+", "receiving", "the {item} received",
     ("{P} receives {n} {item} as a gift.", "A friend gives {P} {n} {item}.", "{P} is handed {n} more {item}.")),
    ("+", "winning", "the {item} won",
     ("{P} wins {n} {item} in a game.", "In a contest {P} wins {n} more {item}.", "{P} earns {n} {item} as a prize.")),
    ("-", "selling", "the {item} sold",
     ("{P} sells {n} of the {item}.", "Then {P} sells {n} {item} at the market.", "{P} trades away {n} {item} for money.")),
    ("-", "losing", "the {item} lost",
     ("{P} loses {n} {item}.", "On the way, {P} drops and loses {n} {item}.", "{P} misplaces {n} of the {item}.")),
    ("-", "giving", "the {item} given away",
     ("{P} gives away {n} {item}.", "Then {P} gives {n} {item} to a stranger.", "{P} hands out {n} {item} to visitors.")),
    ("-", "using", "the {item} used",
     ("{P} uses {n} of the {item}.", "For a project, {P} uses {n} {item}.", "{P} spends {n} {item} on decorations.")),
    ("*", "filling", "the number of {groups} filled",
     ("{P} then fills {n} {groups}, each holding that many {item}.",
      "Next, {P} fills {n} {groups} with that many {item} in every one.",
      "{P} prepares {n} {groups}, and each gets that same number of {item}.")),
    ("*", "copying", "the copying factor",
     ("{P} makes the pile {n} times as large.", "The pile of {item} grows to {n} times its size.",
      "{P} multiplies the pile of {item} by {n}.")),
    ("/", "sharing", "the number of {mates}",
     ("{P} shares the {item} equally among {n} {mates}.", "{P} splits the {item} evenly between {n} {mates}.",
      "{P} hands the {item} out equally to {n} {mates}.")),
)
FINAL_QUESTIONS = ("How many {item} does {P} have now?", "How many {item} does {P} end up with?",
                   "What is the final number of {item} that {P} has?")
DISTRACTORS = ("{P}'s cousin is {k} years old.", "The shop is {k} minutes away from home.",
               "It rained on {k} days last month.", "{P} has a bike with {k} gears.")
ORDINALS = ("First", "Second", "Third", "Fourth", "Fifth", "Sixth", "Seventh", "Eighth")
OPS = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y, "/": lambda x, y: x // y}
PLAN_FIRST = {"*": "multiply {g1} by {g2}", "+": "add {g1} and {g2}"}
PLAN_CHAIN = {"+": "add {cur} and {g}", "-": "subtract {g} from {cur}", "*": "multiply {cur} by {g}",
              "/": "divide {cur} by {g}"}


@dataclass(frozen=True)
class Recipe:
    frames: tuple
    phrasings: slice  # which phrasings of each event (and final question)
    steps: tuple  # allowed step counts
    start: tuple  # range of the first step's operands (+)
    factor: tuple  # range of factors and divisors
    delta: tuple  # range of numbers added/removed
    max_value: int  # largest allowed intermediate
    distractor: bool = False


TRAIN_RECIPE = Recipe(TRAIN_FRAMES, slice(0, 2), (2, 3, 4, 5), (2, 20), (2, 9), (1, 9), 99)
RECIPES = {
    "train": TRAIN_RECIPE,
    "val": TRAIN_RECIPE,
    "test": TRAIN_RECIPE,
    "ood_template": Recipe(OOD_FRAMES, slice(2, 3), (2, 3, 4, 5), (2, 20), (2, 9), (1, 9), 99),
    "ood_steps": Recipe(TRAIN_FRAMES, slice(0, 2), (6, 7), (2, 20), (2, 9), (1, 9), 99),
    "ood_numbers": Recipe(TRAIN_FRAMES, slice(0, 2), (2, 3, 4, 5), (21, 200), (2, 9), (10, 99), 999),
    "ood_distractor": Recipe(TRAIN_FRAMES, slice(0, 2), (2, 3, 4, 5), (2, 20), (2, 9), (1, 9), 99, True),
}
SPLITS = tuple(RECIPES)
OOD_SPLITS = tuple(s for s in SPLITS if s.startswith("ood_"))
HASHED = ("test", "val")  # hash buckets 0 and 1 of 10; a train-recipe question in neither is train's


def hash_bucket(question: str) -> str:
    """Which of train, val and test a question of the train recipe belongs to (a stable hash)."""
    k = int(hashlib.md5(question.encode()).hexdigest(), 16) % 10
    return HASHED[k] if k < len(HASHED) else "train"


def fill(template: str, **slots) -> str:
    text = template.format(**slots)
    return text[0].upper() + text[1:]


def choose_chain_step(rng, cur: int, r: Recipe, used: set):
    """Pick an unused event whose operand keeps the value a positive integer <= r.max_value."""
    events = [e for e in CHAIN_EVENTS if e[1] not in used]
    rng.shuffle(events)
    for ev in events:
        op = ev[0]
        if op == "+":
            n = rng.randint(*r.delta)
        elif op == "-":
            if cur <= r.delta[0]:
                continue
            n = rng.randint(r.delta[0], min(r.delta[1], cur - 1))
        elif op == "*":
            hi = min(r.factor[1], r.max_value // cur)
            if hi < r.factor[0]:
                continue
            n = rng.randint(r.factor[0], hi)
        else:
            divisors = [d for d in range(r.factor[0], r.factor[1] + 1) if cur % d == 0 and d < cur]
            if not divisors:
                continue
            n = rng.choice(divisors)
        new = OPS[op](cur, n)
        if 0 < new <= r.max_value:
            return ev, n, new
    return None


def generate_problem(rng: random.Random, r: Recipe):
    """One problem of recipe r, or None if the drawn program could not be completed."""
    frame = rng.choice(r.frames)
    person = rng.choice(frame.people)
    slots = frame.slots()
    phrase = lambda options: rng.choice(options[r.phrasings])
    n_steps = rng.choice(r.steps)

    op, name, (g1, g2), phrasings = rng.choice(START_EVENTS)
    if op == "*":  # containers times a count per container: a factor, and another (train) or a start count
        a, b = rng.randint(r.factor[0], r.factor[1]), rng.randint(r.factor[0], r.factor[1])
        if r.start[1] > 20:  # large numbers (ood_numbers, base.py's corpus): a large count per container
            b = rng.randint(*r.start)
    else:  # a start count plus a smaller addition
        a, b = rng.randint(*r.start), rng.randint(max(2, r.delta[0]), r.delta[1])
    cur = OPS[op](a, b)
    if cur > r.max_value:
        return None
    subject = person
    sentences = [fill(phrase(phrasings), P=subject, a=a, b=b, **slots)]
    names = [name.format(**slots)]
    plan = [f"{ORDINALS[0]}, " + PLAN_FIRST[op].format(g1=g1.format(**slots), g2=g2.format(**slots))
            + f" to get the {names[0]}."]
    lines = [f"{names[0]} = {a} {op} {b} = {cur}"]
    values, used = [cur], set()
    for i in range(1, n_steps):
        step = choose_chain_step(rng, cur, r, used)
        if step is None:
            return None
        (op, gerund, given, phrasings), n, new = step
        used.add(gerund)
        sentences.append(fill(phrase(phrasings), P=subject, n=n, **slots))
        if op == "/":
            name = f"{slots['item']} per {slots['mate']}"
            subject = f"each {slots['mate']}"
        else:
            name = f"{slots['item']} after {gerund}"
        if name in names:
            return None
        plan.append(f"{ORDINALS[i]}, " + PLAN_CHAIN[op].format(cur=f"the {names[-1]}", g=given.format(**slots))
                    + f" to get the {name}.")
        lines.append(f"{name} = {cur} {op} {n} = {new}")
        names.append(name)
        values.append(new)
        cur = new
    if r.distractor:
        k = rng.randint(2, 60)
        sentences.insert(rng.randint(1, len(sentences)), fill(rng.choice(DISTRACTORS), P=person, k=k))
    sentences.append(fill(phrase(FINAL_QUESTIONS), P=subject, **slots))
    plan.append(f"The answer is the {names[-1]}.")
    return dict(question=" ".join(sentences), plan="\n".join(plan), solution="\n".join(lines),
                answer=number_text(Fraction(cur)), intermediates=[Fraction(v) for v in values])


def make_split(split: str, n: int, seed: int = 0) -> list[Problem]:
    """n distinct problems of one split, deterministic by (split, n, seed)."""
    if split not in RECIPES:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    rng = random.Random(f"comt-{seed}-{split}")
    out, seen = [], set()
    while len(out) < n:
        p = generate_problem(rng, RECIPES[split])
        if p is None or p["question"] in seen:
            continue
        if RECIPES[split] is TRAIN_RECIPE and hash_bucket(p["question"]) != split:
            continue
        seen.add(p["question"])
        out.append(Problem(id=f"{split}-{len(out):05d}", split=split, **p))
    return out


# -----------------------------------------------------------------------------
# Programs: the operations a plan names, an execution carries out and a problem needs. An
# operation is its operator and the quantity it produces ("+", "apples after buying"): the plan
# line "Second, add ... to get the apples after buying." and the execution line
# "apples after buying = 21 + 2 = 23" both name it.

PLAN_STEP = re.compile(r"^\w+, (?P<verb>add|subtract|multiply|divide) .*? to get the (?P<name>[^\n]+?)\.$", re.M)
EXECUTION_STEP = re.compile(r"^(?P<name>[^=\n]+?) = -?\d[\d,.]* (?P<op>[-+*/]) -?\d[\d,.]* =", re.M)
WORD_OP = {"add": "+", "subtract": "-", "multiply": "*", "divide": "/",  # the template's verbs
           "plus": "+", "minus": "-", "times": "*", "divided by": "/"}  # and the base's own "reasoning" form's
WRONG_KINDS = ("wrong plan", "plan not followed", "executed wrongly")


def plan_program(text: str) -> list[tuple[str, str]] | None:
    """The (operator, quantity) of each step of the plan that opens `text` (the lines between
    "Plan:" and "Solution:", but its closing "The answer is ..."); None when the text does not open
    with "Plan:". A line that is not a step the pattern reads is a step ("?", line): a made-up step
    makes a plan wrong.

    >>> plan_program("Plan:\\nFirst, add the a and the b to get the c.\\nThe answer is the c.\\nSolution:\\n")
    [('+', 'c')]
    >>> plan_program("Plan:\\nFirst, add the a and the b to get the c.\\nThen frobnicate the c.\\nSolution:\\n")
    [('+', 'c'), ('?', 'Then frobnicate the c.')]
    """
    head = (text or "").lstrip()
    if not head.startswith("Plan:"):
        return None
    lines = head.removeprefix("Plan:").split("Solution:", 1)[0].split("\n")
    return program_lines(lines, PLAN_STEP, ("The answer is",))


def program_lines(lines: list[str], step: re.Pattern, closing: tuple[str, ...]) -> list[tuple[str, str]]:
    """(operator, quantity) of each non-blank line read by `step`; ("?", line) for a line it cannot
    read, lines opening with `closing` (the plan's last line, naming the answer) left out."""
    out = []
    for line in (ln.strip() for ln in lines):
        if line and not line.startswith(closing):
            m = step.fullmatch(line)
            out.append((WORD_OP[m["verb"]], m["name"].strip()) if m else ("?", line))
    return out


def execution_program(text: str) -> list[tuple[str, str]]:
    """The (operator, quantity) of each `name = x op y = z` line after the "Solution:" marker (of
    the whole text when it has none).

    >>> execution_program("Solution:\\napples after buying = 21 + 2 = 23\\nAnswer: 23")
    [('+', 'apples after buying')]
    """
    body = (text or "").split("Solution:", 1)[-1]
    return [(m["op"], m["name"].strip()) for m in EXECUTION_STEP.finditer(body)]


def gold_program(p: "Problem") -> list[tuple[str, str]] | None:
    """The operations of a synthetic problem's program; None for problems without one (real data)."""
    return execution_program(p.solution) if p.source == "synthetic" and p.solution else None


def plan_verdict(text: str, p: "Problem", correct: bool) -> dict | None:
    """For a problem with a program: whether the plan `text` opens with has the gold program's
    operator sequence (plan_correct: the same steps in the same order; what a step's result is called
    is wording, so a plan that adds "the apples received" where the question's event is buying is
    right when it adds there), whether its execution carries out that plan step by step, operator
    and the quantity each step produces (plan_followed) and, for a wrong
    answer, which of WRONG_KINDS it is: a wrong (or missing) plan, a right plan the execution does
    not follow, or a right plan followed with a wrong number somewhere. None for a problem without
    a program. (To judge a completion written after the gold plan, pass comt_target(p) + completion.)"""
    gold = gold_program(p)
    if gold is None:
        return None
    plan = plan_program(text)
    right_plan = plan is not None and [op for op, _ in plan] == [op for op, _ in gold]
    followed = plan is not None and execution_program(text) == plan
    kind = None if correct else WRONG_KINDS[0] if not right_plan else WRONG_KINDS[1] if not followed else WRONG_KINDS[2]
    return dict(plan_correct=right_plan, plan_followed=followed, wrong_kind=kind)
