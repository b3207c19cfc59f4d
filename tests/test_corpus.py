"""comt/corpus.py: the base's pretraining corpus, its own plan forms and stage 1's replay documents."""
import json
import os
import re

import pytest

from base import parse_args
from comt.corpus import corpus_docs, encode_doc, split_questions
from comt.tasks import CHAIN_EVENTS, FINAL_QUESTIONS, OOD_FRAMES, START_EVENTS, TRAIN_FRAMES, make_split

ROOT = __file__.rsplit("/tests/", 1)[0]


SHIPPED = os.path.join(ROOT, "models", "base")


def shipped_shares() -> dict:
    """The corpus shares of the shipped base's last phase (its build.json)."""
    args = json.load(open(os.path.join(SHIPPED, "build.json")))["args"]
    return dict(worked=args["worked"], plans=args.get("plans", 0.0), story=args["story"])


@pytest.fixture(scope="module")
def last_docs():
    """(prefix, target) documents of the shipped base's last phase (plan documents among them)."""
    return corpus_docs(3000, seed=1, exclude=split_questions(), progress=1.0, **shipped_shares())


def plan_docs(docs) -> list[tuple[str, str]]:
    return [(p, t) for p, t in docs if p.endswith(("\nSteps:\n", "\nReasoning:\n"))]


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


OOD_WORDS = {w.lower() for f in OOD_FRAMES for w in (f.item, *f.group, *f.mates)}


SPLIT_PEOPLE = {p for f in TRAIN_FRAMES + OOD_FRAMES for p in f.people}


def recipe_properties(question: str, solution: str) -> dict:
    """What of a problem's text could be out of the train recipe: its words, phrasings, step count,
    numbers and any irrelevant sentence."""
    numbers = [int(n) for n in re.findall(r"\d+", solution)]
    return dict(ood_words=OOD_WORDS & set(re.findall(r"[a-z]+", question.lower())),
                held_out=any(p.search(question) for p in held_out_phrasings()),
                steps=solution.count("\n") + 1, largest=max(numbers),
                givens=len(re.findall(r"\d+", question)))


def worked_parts(prefix: str, target: str) -> tuple[str, str]:
    """(question, solution lines) of a worked document."""
    return prefix.split("\n")[0], target.split("\n", 1)[1].rsplit("\n", 1)[0]


def test_corpus_holds_no_question_of_any_split(docs, last_docs):
    hashed = {p.question for s in ("test", "val") for p in make_split(s, 2000)}  # the hash buckets, beyond 500
    questions = split_questions() | hashed
    assert plan_docs(last_docs)  # plan documents are checked too
    for prefix, target in docs + last_docs:
        texts = ([prefix.split("\n")[0].removeprefix("Question: ").removeprefix("Problem: ")] if prefix
                 else target.split("\n"))
        assert not questions & set(texts)


def test_plan_documents_are_plans_in_the_base_own_forms_never_the_template(last_docs):
    """A question, then its plan in one of the base's own forms: no line of the post-training template
    (no "Plan:" header, no "First, ... to get the ..." step, no "The answer is"), no digit but the
    numbering of the steps form, no execution
    and no answer; each step in the form's own wording; both forms present."""
    from comt.corpus import OWN_STEP
    from comt.tasks import PLAN_STEP
    from rewards import has_digit
    docs = plan_docs(last_docs)
    assert abs(len(docs) / len(last_docs) - shipped_shares()["plans"]) < 0.05
    forms = {"steps": 0, "reasoning": 0}
    for prefix, target in docs:
        form = "steps" if prefix.endswith("\nSteps:\n") else "reasoning"
        forms[form] += 1
        assert "Plan:" not in prefix + target and "Solution:" not in target and "Answer" not in target
        assert not PLAN_STEP.search(target) and "The answer is" not in target
        assert not has_digit(re.sub(r"^\d\. ", "", target, flags=re.M))  # no number but the steps' own
        steps = target.split("\n")[:-1]
        assert steps and all(OWN_STEP[form].fullmatch(line) for line in steps), target
    assert min(forms.values()) > 0.4 * len(docs)


def test_plan_documents_cover_every_phrasing_length_and_distractor(last_docs):
    """The base learns to plan across the world: held-out phrasings, one to seven steps (long chains
    often), wide numbers and irrelevant sentences, in fresh frames."""
    found = []
    for prefix, target in plan_docs(last_docs):
        question = prefix.split("\n")[0].split(": ", 1)[1]
        steps = target.count("\n")
        numbers = [int(n) for n in re.findall(r"\d+", question)]
        found.append(dict(held_out=any(p.search(question) for p in held_out_phrasings()), steps=steps,
                          givens=len(numbers), largest=max(numbers)))
    share = lambda f: sum(map(f, found)) / len(found)
    assert {f["steps"] for f in found} == set(range(1, 8))
    assert share(lambda f: f["steps"] >= 6) > 0.25 and share(lambda f: f["held_out"]) > 0.3
    assert share(lambda f: f["givens"] == f["steps"] + 2) > 0.1 and share(lambda f: f["largest"] > 20) > 0.3


def test_post_training_data_hold_nothing_of_an_ood_split():
    """Stage 1 and 2 train on the train split and stage 1 replays corpus.worked_doc(world=False):
    neither holds an OOD frame's noun, a held-out phrasing, more than five steps, a number beyond the
    train ranges or a distractor (one given number per step, one more for the first)."""
    import random

    from comt.corpus import taboo_words, worked_doc
    rng, taboo = random.Random(0), taboo_words(ood_nouns=True)
    replay = [worked_parts(*worked_doc(rng, taboo, world=False)) for _ in range(1000)]
    for question, solution in [(p.question, p.solution) for p in make_split("train", 1000)] + replay:
        found = recipe_properties(question, solution)
        assert not found["ood_words"] and not found["held_out"], question
        assert 2 <= found["steps"] <= 5 and found["largest"] <= 99 and found["givens"] == found["steps"] + 1, question
    assert not SPLIT_PEOPLE & {w.strip(".,'s") for q, _ in replay for w in q.split()}


def test_corpus_does_hold_the_whole_world(docs):
    """The base's corpus teaches what the OOD splits need (so the rule cannot silently revert): the
    held-out phrasings, the OOD frames' nouns, chains of six and seven steps, numbers past 99 and
    irrelevant sentences, in worked problems whose solution it supervises."""
    found = [recipe_properties(*worked_parts(p, t)) for p, t in docs if p]
    share = lambda f: sum(map(f, found)) / len(found)
    assert share(lambda f: f["held_out"]) > 0.3
    assert share(lambda f: f["steps"] >= 6) > 0.15 and max(f["steps"] for f in found) == 7
    assert share(lambda f: f["largest"] > 99) > 0.3 and max(f["largest"] for f in found) > 900
    assert share(lambda f: f["givens"] == f["steps"] + 2) > 0.1  # an irrelevant sentence with a number
    assert {w for f in found for w in f["ood_words"]} == OOD_WORDS
    lines = "\n".join(t for p, t in docs if not p)
    assert any(int(z) > 99 for z in re.findall(r"= (\d+)$", lines, re.M))


def test_the_world_arrives_over_the_build():
    """At the first step every worked problem is of the train recipe (in a fresh frame); at the last
    WORLD_RAMP's share of them is drawn across the world."""
    from comt.corpus import WORLD_RAMP
    first = [recipe_properties(*worked_parts(p, t)) for p, t in corpus_docs(1000, seed=1, progress=0.0) if p]
    assert all(not f["held_out"] and f["steps"] <= 5 and f["largest"] <= 99 and f["givens"] == f["steps"] + 1
               for f in first)
    last = [recipe_properties(*worked_parts(p, t)) for p, t in corpus_docs(1000, seed=1, progress=1.0) if p]
    beyond = sum(f["held_out"] or f["steps"] > 5 or f["largest"] > 99 or f["givens"] > f["steps"] + 1 for f in last)
    assert WORLD_RAMP[1] - 0.1 < beyond / len(last) <= WORLD_RAMP[1] + 0.05


def test_the_held_out_phrasing_patterns_find_ood_questions():  # the check above can fail
    patterns = held_out_phrasings()
    assert all(any(p.search(q.question) for p in patterns) for q in make_split("ood_template", 50))
    assert not any(p.search(q.question) for q in make_split("train", 200) for p in patterns)


def test_worked_problems_supervise_execution_never_a_plan(docs, tok):
    worked = [(p, t) for p, t in docs if p]
    assert abs(len(worked) / len(docs) - parse_args([]).worked) < 0.05
    for prefix, target in worked:  # every worked problem carries its plan, in the prompt
        assert prefix.startswith("Question: ") and "\nPlan:\n" in prefix and prefix.endswith(".\n")
        assert target.startswith("Solution:\n") and re.search(r"\nAnswer: \d+$", target)
        assert "Plan:" not in target and " to get the " not in target
    ids, sup = encode_doc(tok, *worked[0])
    assert tok.decode([t for t, s in zip(ids, sup) if s]) == worked[0][1] + tok.eos_token
    assert tok.decode([t for t, s in zip(ids, sup) if not s]) == worked[0][0]


def test_fresh_frames_never_repeat_and_never_use_a_split_person():
    import random

    from comt.corpus import fresh_frame, taboo_words
    rng, taboo = random.Random(0), taboo_words()
    frames = [fresh_frame(rng, taboo) for _ in range(300)]
    words = [(f.item, *f.group, *f.mates, *(p.lower() for p in f.people)) for f in frames]
    assert not {w.lower() for ws in words for w in ws} & taboo
    assert {p.lower() for p in SPLIT_PEOPLE} == taboo
    assert len({(f.item, f.group, f.mates) for f in frames}) == len(frames)  # combinations are fresh
    made_up = [f.item for f in frames if f.item not in __import__("comt.corpus", fromlist=["ITEMS"]).ITEMS]
    assert 0.25 < len(made_up) / len(frames) < 0.55
    replay = [fresh_frame(rng, taboo_words(ood_nouns=True)) for _ in range(300)]
    assert not OOD_WORDS & {w for f in replay for w in (f.item, *f.group, *f.mates)}
