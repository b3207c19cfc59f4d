"""
The base model's pretraining corpus (base.py) and stage 1's replay documents (sft_comt.py --replay):
worked problems with their plan in the prompt, plan documents in the base's own forms, story text
and arithmetic lines, drawn in fresh frames so that no noun or number can be recalled, and never a
question of any split.

Corpus (drawn fresh for every step, one document per row; `corpus_docs` and the tests hold it to this):
  (a) worked problems, --worked share: "Question: ...\\nPlan:\\n<plan>\\n", then
      "Solution:\\n<execution>\\nAnswer: N" and the end token, with the loss on "Solution:" and
      everything after it only: every worked problem carries its plan in the prompt, so the model
      learns to read a plan and execute it, never to write one, and never to solve a question
      without one. Their frames are fresh: the people, the item, the container and the companions
      are drawn anew for every problem, each a made-up word (40%) or a common word from a pool
      (60%; the nouns of every split's frames are among them, the splits' people are not), so no
      noun or number can be recalled and every one must be read from the question and the plan.
      A rising share of them (WORLD_RAMP: none at the first step, 80% at the last) is drawn across
      the world (world_recipe): any phrasing, 1-7 steps, the train number ranges or (half the time)
      the wide ones (starts up to 200, added or removed numbers up to 99, values up to 999; factors
      and divisors 2-9), and one irrelevant sentence a quarter of the time; the others are of the
      train recipe. Reading each number off the question is learned first where it is easiest:
      with the whole world from the first step, the same schedule had reached 28% of `test` from
      the gold plan at its end (docs/notes.md).
  (b) plan documents, --plans share (0 in base.py's first phase): a problem drawn across the world
      (world_recipe, in a fresh frame, 5-7 steps half the time: PLAN_STEPS) and its plan in one of
      the base's own forms (OWN_FORMS below: "Question: ...\\nSteps:\\n" then "1. add the a and the b
      -> the c" lines, or "Problem: ...\\nReasoning:\\n" then "The c are the a plus the b." lines),
      with the loss on the plan and the end token. The same content as a template plan (each step's
      operation, what it combines and what it names), never its "Plan:" header, its "First, ... to
      get the ..." steps or its "The answer is" line; no execution and no answer, so no plan
      document sits beside its own execution.
  (c) story text, --story share: two to four questions, one per line, full loss: half of the
      train recipe in the train frames, half of world_recipe in fresh frames.
  (d) arithmetic, the rest: twelve lines `x op y = z` (a third of them `name = x op y = z`) with
      +, -, *, exact / in the train ranges (values <= 99, added or removed numbers, factors and
      divisors <= 9) or the wide ones (WIDE_RAMP: 40% of the lines at the first step, 80% at the
      last), full loss.
  Never in the corpus: a question of any split (the fresh frames' people are never a split's, and
  train-frame questions at the splits' standard sizes or in the val or test hash bucket are
  skipped), a plan in the post-training template as a target.
"""
import random
import re
from dataclasses import replace

from comt.tasks import (CHAIN_EVENTS, OOD_FRAMES, OPS, SPLITS, START_EVENTS, TRAIN_FRAMES, TRAIN_RECIPE, Frame, Problem,
                        Recipe, generate_problem, gold_program, hash_bucket, make_split, program_lines)

STANDARD_SIZES = {"train": 8000, "val": 500, "test": 500, "ood_template": 500, "ood_steps": 500,
                  "ood_numbers": 500, "ood_distractor": 500}


# -----------------------------------------------------------------------------
# Fresh frames: the people and nouns of a worked problem, drawn anew for every problem

ONSETS = "b d f g k l m n p r s t v z br dr gl kr pl st tr".split()
VOWELS = "a e i o u".split()
CODAS = ["", "", "", "n", "l", "r", "m", "k"]
PEOPLE = ("Ada Alma Bela Bram Carl Cleo Dev Dina Egon Eva Fay Gil Gus Hal Hana Ines Isla Joel June Kai Kira Lara "
          "Luca Milo Mona Ned Nell Oona Otis Pete Pia Quinn Rhea Rita Saul Sven Tara Tess Ugo Uri Vic Vito Wes "
          "Wren Xavi Yael Yuri Zara Zed Iris Paul Gina Kofi Lena Ravi Nina Oscar Vera Will").split()
ITEMS = ("apples muffins stickers marbles books pencils cookies flowers pears plums lemons peaches cherries grapes "
         "carrots potatoes onions tomatoes melons nuts acorns pebbles stones buttons ribbons beads cards eggs "
         "oranges candles crayons markers erasers notebooks envelopes stamps postcards balloons kites toys "
         "blocks bricks tiles spoons forks bottles socks mittens scarves hats gloves puzzles dice rings "
         "bracelets necklaces bells whistles feathers leaves pinecones seeds roses tulips daisies cupcakes "
         "donuts cakes pies biscuits crackers pretzels waffles pancakes sandwiches apricots figs coconuts "
         "walnuts almonds peanuts raisins candies lollipops chocolates magnets batteries bolts nails screws "
         "springs wheels paints brushes sponges towels pillows blankets lamps clocks photos posters maps "
         "tickets badges medals trophies pins patches seashells coins lanterns").split()
GROUPS = ("bag box jar sheet shelf tray plate vase basket bowl bin tin pouch sack case chest drawer cup pot "
          "carton pack bundle row stack tub barrel folder album wallet tube cart wagon packet bottle jug dish bucket purse "
          "crate").split()
MATES = ("friend neighbor classmate cousin student teammate guest aunt brother sister uncle kid player worker "
         "chef artist helper nurse farmer baker singer dancer painter writer runner camper hiker scout pupil "
         "partner member diver sailor villager").split()
PLURAL = {"box": "boxes", "shelf": "shelves", "pouch": "pouches", "dish": "dishes"}


# -----------------------------------------------------------------------------
# The base's own plan forms: how a plan is written in the pretraining corpus (comt/corpus.py), never in
# the post-training template. The same content as a template plan (each step's operation, the
# quantities it combines, the quantity it names) in other headers and other wording:
#   steps      "Question: <q>\nSteps:\n" then "1. add the a and the b -> the c" per step and
#              "Wanted: the c"
#   reasoning  "Problem: <q>\nReasoning:\n" then "The c are the a plus the b." per step and
#              "We are asked for the c."
# The prompt ends at the header; the plan and the stop token are what the base writes.

OWN_FORMS = ("steps", "reasoning")
OWN_HEADERS = {"steps": "Question: {q}\nSteps:\n", "reasoning": "Problem: {q}\nReasoning:\n"}
TEMPLATE_STEP = re.compile(r"^\w+, (?P<verb>add|subtract|multiply|divide) (?P<x>.+?) (?:and|from|by) (?P<y>.+?) "
                           r"to get the (?P<name>[^\n]+?)\.$")
OWN_WORDS = {"add": "plus", "subtract": "minus", "multiply": "times", "divide": "divided by"}
OWN_STEP = {"steps": re.compile(r"^\d+\. (?P<verb>add|subtract|multiply|divide) .+ -> the (?P<name>[^\n]+)$", re.M),
            "reasoning": re.compile(r"^The (?P<name>.+?) are the .+ (?P<verb>plus|minus|times|divided by) the .+\.$",
                                    re.M)}
OWN_CLOSING = ("Wanted:", "We are asked for")  # the last line of each own form, naming the answer


def own_plan_prompt(p: Problem, form: str = "steps") -> str:
    """The question under the base's own header for `form` (the plan follows)."""
    return OWN_HEADERS[form].format(q=p.question)


def own_plan_text(plan: str, form: str = "steps") -> str:
    """A template plan (one "First, add ... to get the c." line per step, then "The answer is the c.")
    rewritten in the base's own form.

    >>> own_plan_text("First, subtract the a from the b to get the c.\\nThe answer is the c.", "reasoning")
    'The c are the b minus the a.\\nWe are asked for the c.'
    """
    lines = []
    for k, line in enumerate(plan.split("\n")[:-1]):
        m = TEMPLATE_STEP.match(line)
        if m is None:
            raise ValueError(f"not a template plan line: {line!r}")
        verb, x, y, name = m["verb"], m["x"], m["y"], m["name"]
        if form == "steps":
            lines.append(f"{k + 1}. {line.split(', ', 1)[1].rsplit(' to get the ', 1)[0]} -> the {name}")
        else:  # "subtract the a from the b": the b minus the a
            first, second = (y, x) if verb == "subtract" else (x, y)
            lines.append(f"The {name} are {first} {OWN_WORDS[verb]} {second}.")
    wanted = plan.split("\n")[-1].removeprefix("The answer is the ").removesuffix(".")
    return "\n".join(lines + [f"Wanted: the {wanted}" if form == "steps" else f"We are asked for the {wanted}."])


def own_plan_program(text: str, form: str = "steps") -> list[tuple[str, str]]:
    """The (operator, quantity) of each step of a plan written in the base's own form; a line of
    another form is a step ("?", line), so it makes the plan wrong.

    >>> own_plan_program("1. add the a and the b -> the c\\n2. divide the c by the d -> the e\\nWanted: the e")
    [('+', 'c'), ('/', 'e')]
    """
    return program_lines((text or "").split("\n"), OWN_STEP[form], OWN_CLOSING)


def own_plan_correct(text: str, p: Problem, form: str = "steps") -> bool | None:
    """Whether a plan in the base's own form has the gold program's operator sequence (as plan_correct
    judges a template plan); None for a problem without a program."""
    gold = gold_program(p)
    return None if gold is None else [op for op, _ in own_plan_program(text, form)] == [op for op, _ in gold]


def taboo_words(ood_nouns: bool = False) -> set[str]:
    """Words a fresh frame never uses: the people of every split's frames (every question of a split
    names one of them first, so no fresh problem can be one); with ood_nouns also the OOD frames'
    nouns (stage 1's replay, which keeps to the train recipe)."""
    words = {p.lower() for f in TRAIN_FRAMES + OOD_FRAMES for p in f.people}
    if ood_nouns:
        words |= {w.lower() for f in OOD_FRAMES for w in (f.item, *f.group, *f.mates)}
    return words


def invented_word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables))


def fresh_word(rng: random.Random, pool: list[str], taboo: set[str], used: set[str], real: float) -> str:
    """A word from the pool (probability `real`) or a made-up one, never taboo or used already."""
    while True:
        w = rng.choice(pool) if rng.random() < real else invented_word(rng, rng.choice((2, 2, 3)))
        if w.lower() not in taboo and w.lower() not in used:
            used.add(w.lower())
            return w


def fresh_frame(rng: random.Random, taboo: set[str], real: float = 0.6) -> Frame:
    """Three people, an item, a container and companions, each drawn from a pool of common words
    (the nouns of every split's frames among them) or made up: combinations no split uses, so every
    noun must be read from the question."""
    used = set()
    people = tuple(fresh_word(rng, PEOPLE, taboo, used, real).capitalize() for _ in range(3))
    item = fresh_word(rng, ITEMS, taboo, used, real)
    item = item if item in ITEMS else item + "s"
    group, mate = fresh_word(rng, GROUPS, taboo, used, real), fresh_word(rng, MATES, taboo, used, real)
    plural = lambda w: PLURAL.get(w, w + "s")
    return Frame(people, item, (group, plural(group)), (mate, plural(mate)))


# -----------------------------------------------------------------------------
# Corpus: (prefix, target) text pairs; the loss covers the target only

WORLD_STEPS = (1, 2, 3, 4, 5, 6, 7)  # chains up to ood_steps' longest
WIDE = dict(start=(2, 200), delta=(1, 99), max_value=999)  # number ranges that hold ood_numbers' and train's
WIDE_SHARE, DISTRACTOR_SHARE = 0.5, 0.25  # of world_recipe's problems
WORLD_RAMP = (0.0, 0.8)  # share of worked problems drawn by world_recipe at the first and the last step
WIDE_RAMP = (0.4, 0.8)  # share of arithmetic lines in the wide ranges, the same way


def ramp(bounds: tuple[float, float], progress: float) -> float:
    """The share at `progress` (0 at the first step, 1 at the last), linear between the bounds."""
    return bounds[0] + (bounds[1] - bounds[0]) * min(max(progress, 0.0), 1.0)


def world_recipe(rng: random.Random, frame: Frame) -> Recipe:
    """The recipe of one corpus problem, drawn across the whole world: every phrasing, 1-7 steps,
    the train number ranges or (WIDE_SHARE of the time) the wide ones, and an irrelevant sentence
    DISTRACTOR_SHARE of the time."""
    ranges = WIDE if rng.random() < WIDE_SHARE else dict(start=TRAIN_RECIPE.start, delta=TRAIN_RECIPE.delta,
                                                          max_value=TRAIN_RECIPE.max_value)
    return Recipe((frame,), slice(0, 3), WORLD_STEPS, factor=TRAIN_RECIPE.factor,
                  distractor=rng.random() < DISTRACTOR_SHARE, **ranges)


def train_recipe_in(frame: Frame) -> Recipe:
    return replace(TRAIN_RECIPE, frames=(frame,))


def drawn(rng: random.Random, recipe: Recipe) -> dict:
    """A problem of the recipe (generate_problem, tried again until a program completes)."""
    while (p := generate_problem(rng, recipe)) is None:
        pass
    return p


def worked_doc(rng: random.Random, taboo: set[str], world: bool = True) -> tuple[str, str]:
    """A fresh-frame worked problem: ("Question: ...\\nPlan:\\n<plan>\\n", "Solution:\\n<execution>\\nAnswer: N").
    world: drawn by world_recipe; else by the train recipe (the corpus's early problems, stage 1's replay)."""
    frame = fresh_frame(rng, taboo)
    p = drawn(rng, world_recipe(rng, frame) if world else train_recipe_in(frame))
    return f"Question: {p['question']}\nPlan:\n{p['plan']}\n", f"Solution:\n{p['solution']}\nAnswer: {p['answer']}"


PLAN_STEPS = (1, 2, 3, 4, 5, 6, 7, 5, 6, 7)  # plan documents: long chains weighted (5-7 steps half the time)


def plan_doc(rng: random.Random, taboo: set[str]) -> tuple[str, str]:
    """A fresh-frame world problem and its plan in one of the base's own forms (OWN_FORMS, never
    the post-training template): (header and question, plan). No execution, no answer."""
    recipe = replace(world_recipe(rng, fresh_frame(rng, taboo)), steps=PLAN_STEPS)
    p, form = drawn(rng, recipe), rng.choice(OWN_FORMS)
    return OWN_HEADERS[form].format(q=p["question"]), own_plan_text(p["plan"], form)


def story_doc(rng: random.Random, taboo: set[str], exclude: set[str]) -> tuple[str, str]:
    """Two to four questions, one per line: of the train recipe in the train frames (never one of a
    split: not in `exclude`, not in the val or test hash bucket), or of world_recipe in a fresh frame."""
    out = []
    while len(out) < rng.randint(2, 4):
        if rng.random() < 0.5:
            p = generate_problem(rng, TRAIN_RECIPE)
            if p and p["question"] not in exclude and hash_bucket(p["question"]) == "train":
                out.append(p["question"])
        else:
            out.append(drawn(rng, world_recipe(rng, fresh_frame(rng, taboo)))["question"])
    return "", "\n".join(out)


def quantity_names() -> list[str]:
    """Result names of the train frames' events ("apples after buying")."""
    names = []
    for f in TRAIN_FRAMES:
        names += [e[1].format(**f.slots()) for e in START_EVENTS]
        names += [f"{f.item} after {e[1]}" for e in CHAIN_EVENTS] + [f"{f.item} per {f.mates[0]}"]
    return names


def arithmetic_line(rng: random.Random, name: str, wide: bool = False) -> tuple[str, str]:
    """('name = x op y =', ' z'), or 'x op y =' without a name: one exact integer step. Train ranges:
    values <= 99, added or removed numbers, factors and divisors <= 9; wide: values <= 999, added or
    removed numbers <= 99, factors and divisors <= 9 (every split's steps are of one of the two)."""
    top, step = (WIDE["max_value"], WIDE["delta"][1]) if wide else (TRAIN_RECIPE.max_value, TRAIN_RECIPE.delta[1])
    op = rng.choice("+-*/")
    if op == "+":
        y = rng.randint(1, step)
        x = rng.randint(1, top - y)
    elif op == "-":
        x = rng.randint(2, top)
        y = rng.randint(1, min(step, x - 1))
    elif op == "*":
        y = rng.randint(2, 9)
        x = rng.randint(1, top // y)
    else:
        y = rng.randint(2, 9)
        x = y * rng.randint(1, top // y)
    return f"{name} = " * bool(name) + f"{x} {op} {y} =", f" {OPS[op](x, y)}"


def arithmetic_doc(rng: random.Random, names: list[str], taboo: set[str], wide: float) -> tuple[str, str]:
    """Twelve arithmetic lines `x op y = z`, a `wide` share of them in the wide ranges, a third of them
    named (train-frame or made-up names)."""
    lines = []
    for _ in range(12):
        u = rng.random()
        name = ("" if u > 1 / 3 else rng.choice(names) if u < 0.15 else
                f"{fresh_word(rng, [], taboo, set(), 0.0)}s after {rng.choice(CHAIN_EVENTS)[1]}")
        lines.append("".join(arithmetic_line(rng, name, wide=rng.random() < wide)))
    return "", "\n".join(lines)


class Corpus:
    """The document mix: shares of worked problems, plan documents and story text, the rest
    arithmetic. `progress` (0 at the first step, 1 at the last; set per window by Batches) moves
    worked problems from the train recipe towards the whole world and arithmetic towards the wide
    ranges (WORLD_RAMP, WIDE_RAMP): reading numbers off a question is learned first where it is easiest."""

    def __init__(self, worked: float, story: float, exclude: set[str], progress: float = 0.5, plans: float = 0.0):
        self.worked, self.story, self.exclude, self.progress, self.plans = worked, story, exclude, progress, plans
        self.taboo = taboo_words()
        self.names = quantity_names()

    def doc(self, rng: random.Random) -> tuple[str, str]:
        u = rng.random()
        if u < self.worked:
            return worked_doc(rng, self.taboo, world=rng.random() < ramp(WORLD_RAMP, self.progress))
        if u < self.worked + self.plans:
            return plan_doc(rng, self.taboo)
        if u < self.worked + self.plans + self.story:
            return story_doc(rng, self.taboo, self.exclude)
        return arithmetic_doc(rng, self.names, self.taboo, ramp(WIDE_RAMP, self.progress))


def corpus_docs(n: int, seed: int, worked: float = 0.5, story: float = 0.1, exclude=frozenset(),
                progress: float = 0.5, plans: float = 0.0) -> list:
    """n (prefix, target) documents of the corpus at `progress`, deterministic by seed."""
    rng, corpus = random.Random(f"docs-{seed}"), Corpus(worked, story, set(exclude), progress, plans)
    return [corpus.doc(rng) for _ in range(n)]


def split_questions() -> set[str]:
    """Questions of every split at its standard size: never in the corpus."""
    return {p.question for s in SPLITS for p in make_split(s, STANDARD_SIZES[s])}


def encode_doc(tok, prefix: str, target: str) -> tuple[list[int], list[bool]]:
    """ids of prefix + target + EOS, and which of them are supervised (target and EOS)."""
    a = tok(prefix)["input_ids"] if prefix else []
    b = tok(target)["input_ids"] + [tok.eos_token_id]
    return a + b, [False] * len(a) + [True] * len(b)
