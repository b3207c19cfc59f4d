"""evaluate.py: metrics against hand-computed values on fabricated predictions, and the CLI."""
import json
import math
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest

import evaluate
from comt.tasks import Problem, plan_verdict
from conftest import write_rows
from evaluate import planned_text, record_of, summarise
from rewards import RewardSettings, answer_correct, answer_span, judge, token_char_ends

ROOT = __file__.rsplit("/tests/", 1)[0]
ARGS = SimpleNamespace(bins=10, overconf_threshold=0.9, conf_agg="geo", step_check="auto", samples=1)


def judge_record(text, ids, logprobs, p, tok, args) -> dict:
    """The record evaluate keeps of one completion (text: the decoding of ids)."""
    j = judge(text, logprobs, token_char_ends(tok, ids), p.answer, p.intermediates,
              RewardSettings(conf_agg=args.conf_agg, step_check=args.step_check))
    return record_of(j, plan_verdict(planned_text(text, p, args), p, j.correct))


def test_answer_span_prefers_the_answer_line():
    text = "a = 2 + 3 = 5\nAnswer: $1,234."
    a, b = answer_span(text)
    assert text[a:b] == "$1,234"
    a, b = answer_span("so the total is 42 apples")
    assert (a, b) == (16, 18)
    assert answer_span("no number") is None


def record(ok, ok_len, conf, step_confs, step_rights, tokens=10, plan=False):
    return dict(ok=ok, ok_lenient=ok_len, tokens=tokens, conf=conf, step_confs=step_confs, step_rights=step_rights,
                plan=plan)


def test_summarise_strict_lenient_overconfidence_and_first_wrong_step():
    records = [
        record(True, True, 0.9, [0.95, 0.9], [True, True], plan=True),
        record(False, True, 0.2, [0.97, 0.5], [False, False]),  # first wrong step confident
        record(False, False, 0.6, [0.8, 0.99], [True, False]),  # first wrong step 0.99: confident
        record(False, False, 0.0, [0.4], [False]),  # first wrong step 0.4: not confident
    ]
    m = summarise(records, [], ARGS)
    assert m["acc"] == 0.25 and m["acc_lenient"] == 0.5 and m["plan_rate"] == 0.25
    assert m["steps"] == 7 and m["step_acc"] == pytest.approx(3 / 7)
    assert m["overconf_err"] == pytest.approx(2 / 7)  # 0.97 and 0.99 wrong and above 0.9
    assert m["first_wrong_conf"] == pytest.approx(2 / 3)
    assert m["brier"] == pytest.approx((0.1 ** 2 + 0.2 ** 2 + 0.6 ** 2 + 0) / 4)
    assert m["auroc"] == 1.0  # the one right answer has the highest confidence
    assert "pass@1" not in m
    m = summarise(records, [2, 0, 1, 4], SimpleNamespace(**{**vars(ARGS), "samples": 4}))
    assert m["pass@4"] == 0.75 and m["pass@1"] == pytest.approx((0.5 + 0 + 0.25 + 1) / 4)


def test_judge_reads_confidences_off_the_right_tokens(tok):
    text = "a = 2 + 3 = 5\nb = 5 * 4 = 21\nAnswer: 21"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    pieces = [tok.decode([t]) for t in ids]
    lps = [math.log(0.5)] * len(ids)
    lps[-2], lps[-1] = math.log(0.8), math.log(0.2)  # the answer's digits "2" "1"
    i5 = pieces.index("5")  # the first step's result
    lps[i5] = math.log(0.9)
    p = Problem(id="x", question="q", answer="20", intermediates=[5.0, 20.0])
    r = judge_record(text, ids, lps, p, tok, ARGS)
    assert r["ok"] is False and r["ok_lenient"] is False and r["tokens"] == len(ids)
    assert r["conf"] == pytest.approx(0.4)  # sqrt(0.8 * 0.2)
    assert r["step_confs"][0] == pytest.approx(0.9)
    assert r["step_rights"] == [True, False]  # gold check: 21 is not an intermediate
    arith = judge_record(text, ids, lps, Problem(id="y", question="q", answer="21"), tok, ARGS)
    assert arith["ok"] is True and arith["step_rights"] == [True, False]  # 5 * 4 != 21
    planned = "Plan:\nFirst, add the a and the b.\nSolution:\n" + text
    ids = tok(planned)["input_ids"]
    assert judge_record(planned, ids, [0.0] * len(ids), p, tok, ARGS)["plan"] and not r["plan"]


@pytest.mark.cli
def test_cli_writes_table_json_and_plots(model_dir, tmp_path):
    a, b = tmp_path / "a" / "ck", tmp_path / "b" / "ck"  # same folder name: results keyed by path
    shutil.copytree(model_dir, a)
    shutil.copytree(model_dir, b)
    out = tmp_path / "e.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "evaluate.py", "--ckpt", str(a), str(b), "--splits", "test,ood_steps",
                          "--n", "3", "--max-new-tokens", "6", "--samples", "2", "--json", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| checkpoint | test | ood_steps |" in res.stdout
    saved = json.loads(out.read_text())
    assert set(saved["results"]) == {str(a), str(b)}
    assert set(saved["results"][str(a)]) == {"test", "ood_steps"}
    assert saved["results"][str(a)] == saved["results"][str(b)]  # same weights, same greedy answers
    m = saved["results"][str(a)]["test"]
    assert m["n"] == 3 and 0 <= m["acc"] <= m["acc_lenient"] <= 1 and 0 < m["tokens"] <= 6 and "pass@2" in m
    for png in ("e_reliability.png", "e_accuracy.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.cli
def test_cli_rejects_a_missing_checkpoint(tmp_path):
    res = subprocess.run([sys.executable, "evaluate.py", "--ckpt", str(tmp_path / "nope")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "not a checkpoint directory" in res.stderr


@pytest.mark.parametrize("text, gold", [("Plan:\nx.\nSolution:\nAnswer: 12.0", "12"), ("answer: 12", "12"),
                                        ("Answer: 5\nthen again\nAnswer: 12", "12"), ("Answer: 12", "12.5"),
                                        ("the total is 12", "12"), ("#### 1,200", "1200")])
def test_one_checker_for_every_accuracy(text, gold, tok):
    """answer_correct and the strict and lenient verdicts of the record evaluate.py keeps agree."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    r = judge_record(text, ids, [0.0] * len(ids), Problem(id="x", question="q", answer=gold), tok, ARGS)
    assert (r["ok"], r["ok_lenient"]) == (answer_correct(text, gold), answer_correct(text, gold, lenient=True))


def test_docstring_examples_hold():
    import doctest

    import evaluate
    from comt import show
    assert doctest.testmod(evaluate).failed == 0 and doctest.testmod(show).failed == 0


# A hand-built problem of the synthetic world and completions of it, one of each kind.
GOLD_PLAN = ("Plan:\nFirst, multiply the number of bags by the apples per bag to get the apples in the bags.\n"
             "Second, add the apples in the bags and the apples bought to get the apples after buying.\n"
             "Third, subtract the apples used from the apples after buying to get the apples after using.\n"
             "The answer is the apples after using.\nSolution:\n")
GOLD_SOLUTION = "apples in the bags = 3 * 4 = 12\napples after buying = 12 + 2 = 14\napples after using = 14 - 5 = 9"
APPLES = Problem(id="a", question="Mia has 3 bags with 4 apples in each bag. Mia buys 2 more apples. Mia uses 5 of "
                 "the apples. How many apples does Mia have now?", answer="9", plan=GOLD_PLAN[6:-11],
                 solution=GOLD_SOLUTION, intermediates=[12, 14, 9])
WRONG_PLAN = GOLD_PLAN.replace("Second, add the apples in the bags and the apples bought to get the apples after "
                               "buying.", "Second, subtract the apples sold from the apples in the bags to get the "
                               "apples after selling.").replace("after buying to get", "after selling to get")
COMPLETIONS = {  # kind: (completion, right answer, plan correct, plan followed)
    "right plan followed": (GOLD_PLAN + GOLD_SOLUTION + "\nAnswer: 9", True, True, True),
    "executed wrongly": (GOLD_PLAN + GOLD_SOLUTION[:-1] + "8\nAnswer: 8", False, True, True),
    "wrong plan followed": (WRONG_PLAN + "apples in the bags = 3 * 4 = 12\napples after selling = 12 - 2 = 10\n"
                            "apples after using = 10 - 5 = 5\nAnswer: 5", False, False, True),
    "right plan not followed": (GOLD_PLAN + "apples in the bags = 3 * 4 = 12\napples after using = 12 - 5 = 7\n"
                                "Answer: 7", False, True, False),
    "right operations, misnamed event, followed": (GOLD_PLAN.replace("bought", "received").replace(
        "after buying", "after receiving") + GOLD_SOLUTION.replace("after buying", "after receiving") + "\nAnswer: 9",
        True, True, True),
}


@pytest.mark.parametrize("kind", COMPLETIONS)
def test_plan_verdicts_on_hand_built_completions(kind, tok):
    text, ok, correct, followed = COMPLETIONS[kind]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    r = judge_record(text, ids, [0.0] * len(ids), APPLES, tok, ARGS)
    assert (r["ok"], r["plan_correct"], r["plan_followed"]) == (ok, correct, followed)
    want = {"right plan followed": None, "executed wrongly": "executed wrongly", "wrong plan followed": "wrong plan",
            "right plan not followed": "plan not followed", "right operations, misnamed event, followed": None}[kind]
    assert r["wrong_kind"] == want


def test_wrong_answers_split_three_ways_and_add_up(tok):
    records = []
    for text, *_ in COMPLETIONS.values():
        ids = tok(text, add_special_tokens=False)["input_ids"]
        records.append(judge_record(text, ids, [0.0] * len(ids), APPLES, tok, ARGS))
    m = summarise(records, [], ARGS)
    assert (m["plan_correct"], m["plan_followed"]) == (4 / 5, 4 / 5)
    assert (m["wrong_plan"], m["not_followed"], m["executed_wrongly"]) == (1 / 5, 1 / 5, 1 / 5)
    assert m["wrong_plan"] + m["not_followed"] + m["executed_wrongly"] == pytest.approx(1 - m["acc"])
    assert m["per_problem"]["plan_correct"] == [True, True, False, True, True]


def test_gold_plan_prompts_judge_the_execution_against_the_gold_plan(tok):
    args = SimpleNamespace(**vars(ARGS), gold_plan=True)
    for solution, followed in ((GOLD_SOLUTION + "\nAnswer: 9", True), (COMPLETIONS["right plan not followed"][0]
                                                                      .removeprefix(GOLD_PLAN), False)):
        ids = tok(solution, add_special_tokens=False)["input_ids"]
        r = judge_record(solution, ids, [0.0] * len(ids), APPLES, tok, args)
        assert r["plan_correct"] and r["plan_followed"] == followed
    from comt.evaluation import prompt_ids
    assert tok.decode(prompt_ids(tok, APPLES, True)).endswith(GOLD_PLAN)


def test_real_problems_get_no_plan_verdict(tok):
    p = Problem(id="g", question="q", answer="9", solution="3*4 = <<3*4=12>>12\n#### 9", source="gsm8k")
    text = GOLD_PLAN + GOLD_SOLUTION + "\nAnswer: 9"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    r = judge_record(text, ids, [0.0] * len(ids), p, tok, ARGS)
    assert "plan_correct" not in r and math.isnan(summarise([r], [], ARGS)["plan_correct"])


OWN_RIGHT = ("1. multiply the number of bags by the apples per bag -> the apples in the bags\n"
             "2. add the apples in the bags and the apples bought -> the apples after buying\n"
             "3. subtract the apples used from the apples after buying -> the apples after using\n"
             "Wanted: the apples after using")
OWN_PLANS = {  # the base's own plan (evaluate.py --own-plan steps), hand-built: (text, plan correct)
    "right plan": (OWN_RIGHT, True),
    "right plan, other names": (OWN_RIGHT.replace("after buying", "after receiving"), True),
    "short plan": (OWN_RIGHT.split("\n3.")[0] + "\nWanted: the apples after buying", False),
    "a step too many": (OWN_RIGHT.replace("\nWanted", "\n4. add the apples after using and the apples found -> "
                                          "the apples after finding\nWanted"), False),
    "wrong operator": (OWN_RIGHT.replace("3. subtract the apples used from", "3. add the apples used and"), False),
    "template form": (GOLD_PLAN.removeprefix("Plan:\n").removesuffix("Solution:\n"), False),
    "other own form": ("The apples in the bags are the number of bags times the apples per bag.\n"
                       "The apples after buying are the apples in the bags plus the apples bought.\n"
                       "The apples after using are the apples after buying minus the apples used.", False),
    "nothing": ("", False),
}


@pytest.mark.parametrize("kind", OWN_PLANS)
def test_own_plans_are_judged_by_their_steps_in_the_asked_form(kind):
    from comt.corpus import own_plan_correct
    text, right = OWN_PLANS[kind]
    assert own_plan_correct(text, APPLES, "steps") is right
    if kind == "other own form":  # right in the form it is written in
        assert own_plan_correct(text, APPLES, "reasoning") is True


class ScriptedEngine:
    """An engine stand-in whose completion of the k-th prompt it is given is the k-th scripted text."""

    def __init__(self, tok, texts):
        self.tok, self.texts, self.prompts = tok, list(texts), []
        self.model = SimpleNamespace(config=SimpleNamespace(eos_token_id=tok.eos_token_id))

    def generate(self, prompts, **kw):
        import torch

        from comt.engine import Samples
        rows = [self.tok(self.texts.pop(0), add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
                for _ in prompts]
        self.prompts += prompts
        tokens = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
        mask = torch.zeros_like(tokens, dtype=torch.bool)
        for r, ids in enumerate(rows):
            tokens[r, :len(ids)], mask[r, :len(ids)] = torch.tensor(ids), True
        return Samples(tokens=tokens, mask=mask, logprobs=torch.zeros(tokens.shape), stopped=torch.ones(len(rows),
                       dtype=torch.bool), prompt_index=torch.arange(len(rows)))


def test_own_plan_evaluation_prompts_in_the_base_form_and_judges_what_it_writes(tok):
    from comt.evaluation import own_plan_judgements
    from evaluate import own_plan_summary
    kinds = ["right plan", "short plan", "template form"]
    engine = ScriptedEngine(tok, [OWN_PLANS[k][0] for k in kinds])
    judged = own_plan_judgements(engine, tok, [APPLES] * 3, 64, "steps", batch=2)
    assert [j["plan_correct"] for j in judged] == [True, False, False] and [j["steps"] for j in judged] == [3, 2, 0]
    assert tok.decode(engine.prompts[0]) == f"Question: {APPLES.question}\nSteps:\n"
    m = own_plan_summary(judged)
    assert m["plan_correct"] == pytest.approx(1 / 3) and m["per_problem"]["plan_correct"] == [True, False, False]


@pytest.mark.cli
def test_cli_own_plan_mode_writes_plan_correct_per_split(tmp_path):
    """evaluate.py --own-plan on the shipped base: a plan-correct table and JSON per split; every plan
    it writes word for word as the gold plan rewritten in the base's form (an independent check) is
    judged right, and most test plans are."""
    out = tmp_path / "own.json"
    base = os.path.join(ROOT, "models", "base")
    res = subprocess.run([sys.executable, "evaluate.py", "--ckpt", base, "--own-plan", "steps", "--splits",
                          "test,ood_steps", "--n", "8", "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| checkpoint, own plans: plan correct (steps) | test | ood_steps |" in res.stdout
    saved = json.loads(out.read_text())["results"]["base"]
    from comt.common import check_checkpoint, load_model, pad_id
    from comt.corpus import own_plan_text
    from comt.engine import Engine
    from comt.evaluation import own_plan_judgements
    from comt.tasks import make_split
    tok = check_checkpoint(base, "--ckpt")
    engine = Engine(load_model(base).eval(), pad_id=pad_id(tok))
    exact = 0
    for split in ("test", "ood_steps"):
        problems = make_split(split, 8)
        texts = [j["text"].strip() for j in own_plan_judgements(engine, tok, problems, 320)]
        for text, p, right in zip(texts, problems, saved[split]["per_problem"]["plan_correct"]):
            if text == own_plan_text(p.plan, "steps"):
                exact += 1
                assert right, text
    assert exact >= 4 and saved["test"]["plan_correct"] > 0.5


@pytest.mark.cli
def test_show_prints_each_checkpoints_own_reward_parts(model_dir, tmp_path, capsys):
    """A checkpoint trained with --conf-weight 0.25 is shown at 0.25; one that records no reward says so."""
    import ccrl
    import evaluate
    out = str(tmp_path / "rl")
    ccrl.main(["--init", model_dir, "--out", out, "--n-train", "8", "--steps", "1", "--prompts-per-step", "2",
               "--group-size", "2", "--max-new-tokens", "8", "--eval-n", "0", "--conf-weight", "0.25"])
    capsys.readouterr()
    evaluate.main(["--ckpt", model_dir, out, "--splits", "test", "--n", "1", "--show", "1", "--no-plots",
                   "--max-new-tokens", "8", "--json", str(tmp_path / "e.json")])
    parts = [line for line in capsys.readouterr().out.splitlines() if "reward parts" in line]
    assert len(parts) == 2
    base, rl = parts
    assert "(no reward recorded with this checkpoint; ccrl.py's defaults)" in base and " 0.5 x confidence" in base
    assert "reward parts: correct" in rl and " 0.25 x confidence term" in rl


def with_state(model_dir, folder, state):
    """A copy of the tiny checkpoint with `state` as its training state."""
    import torch
    shutil.copytree(model_dir, folder)
    torch.save(state, os.path.join(folder, "train_state.pt"))
    return str(folder)


CCRL_FLAGS = dict(steps=2, reward="ccrl", conf_weight=0.25, conf_form="signed", conf_agg="geo", step_check="auto",
                  plan_weight=0.0)


def ccrl_state(**flags):
    return dict(step=2, args={**CCRL_FLAGS, **flags}, totals={}, script="ccrl.py")


@pytest.mark.hostile
def test_the_same_checkpoint_twice_is_refused(model_dir):
    import evaluate
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--ckpt", model_dir, model_dir + "/"])


@pytest.mark.hostile
def test_a_checkpoint_older_than_a_reward_flag_takes_its_default_and_says_so(model_dir, tmp_path, capsys):
    import evaluate
    state = ccrl_state()
    del state["args"]["plan_weight"]
    old = with_state(model_dir, tmp_path / "old", state)
    assert evaluate.checkpoint_reward(old) == RewardSettings(conf_weight=0.25)
    assert "saved before --plan-weight existed: judged with ccrl.py's default (--plan-weight 0.0)" in \
        capsys.readouterr().err


@pytest.mark.hostile
@pytest.mark.parametrize("flag,value", [("conf_weight", float("nan")), ("conf_form", 5), ("reward", "ccrll"),
                                        ("plan_weight", "0.5")])
def test_a_recorded_reward_of_the_wrong_kind_is_one_line_before_any_work(model_dir, tmp_path, flag, value):
    import evaluate
    bad = with_state(model_dir, tmp_path / "bad", ccrl_state(**{flag: value}))
    with pytest.raises(SystemExit, match=f"its recorded --{flag.replace('_', '-')}"):
        evaluate.main(["--ckpt", model_dir, bad, "--n", "2", "--splits", "test", "--json", str(tmp_path / "e.json")])
    assert not (tmp_path / "e.json").exists()


@pytest.mark.hostile
@pytest.mark.parametrize("state", [[1, 2], dict(step=2, args=[], totals={}), dict(step="2", args=dict(steps=2),
                                                                                   totals={})])
def test_a_training_state_that_is_not_the_record_is_one_line(model_dir, tmp_path, state):
    """evaluate.py, ccrl.py --init and sft_comt.py --resume all read a checkpoint's training state."""
    import ccrl
    import evaluate
    import sft_comt
    bad = with_state(model_dir, tmp_path / "bad", state)
    with open(os.path.join(bad, "run.json"), "w") as f:
        json.dump(dict(script="sft_comt.py"), f)  # (a run of sft_comt.py, so that --resume reads its state)
    for main, argv in ((evaluate.main, ["--ckpt", bad, "--n", "2", "--json", str(tmp_path / "e.json")]),
                       (ccrl.main, ["--init", bad, "--out", str(tmp_path / "rl"), "--eval-n", "0"]),
                       (sft_comt.main, ["--out", bad, "--resume"])):
        with pytest.raises(SystemExit, match="not a training state of this project"):
            main(argv)
    assert not (tmp_path / "e.json").exists() and not (tmp_path / "rl" / "log.jsonl").exists()


@pytest.mark.hostile
def test_files_beside_the_json_are_checked_before_the_evaluation(model_dir, tmp_path):
    import evaluate
    (tmp_path / "e_reliability.png").mkdir()  # where a plot would go: a folder
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--ckpt", model_dir, "--json", str(tmp_path / "e.json")])
    evaluate.parse_args(["--ckpt", model_dir, "--json", str(tmp_path / "e.json"), "--no-plots"])


def test_evaluation_tables_say_what_they_skipped():
    from evaluate import markdown_tables
    m = dict(acc=0.5, acc_lenient=0.5, n=3, skipped=2, **{k: 0.0 for k in (
        "tokens", "plan_rate", "ece", "brier", "auroc", "step_acc", "step_ece", "overconf_err", "first_wrong_conf",
        "plan_correct", "plan_followed", "wrong_plan", "not_followed", "executed_wrongly")})
    assert "Skipped, too long for the model's context (not in the tables above): ck test: 2 of 5" in \
        markdown_tables({"ck": {"test": m}})


def test_evaluate_refuses_empty_data():
    import evaluate
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--ckpt", ROOT + "/models/base", "--data", ""])


@pytest.mark.cli
def test_evaluation_skips_over_long_problems_with_a_count(model_dir, tmp_path, capsys):
    data = write_rows(tmp_path / "d.jsonl", [dict(id="a", question="What is 2 + 3?", answer="5"),
                                             dict(id="long", question="apples and pears " * 400, answer="1")])
    out = str(tmp_path / "e.json")
    evaluate.main(["--ckpt", model_dir, "--data", data, "--json", out, "--no-plots", "--max-new-tokens", "8"])
    assert "skipped 1 of 2" in capsys.readouterr().err
    with open(out) as f:
        res = next(iter(json.load(f)["results"].values()))[data]
    assert (res["n"], res["skipped"]) == (1, 1)


@pytest.mark.parametrize("argv, words", [
    (["--data", "{tmp}"], "is a directory"),
    (["--data", "hub:nobody/nothing:test"], "cannot load it"),
    (["--splits", "test", "--n", "0"], "--n 0 (every row) is for real data"),
    (["--json", "{tmp}"], "not a file that can be written"),
])
def test_evaluate_refuses_in_one_line_before_it_evaluates(model_dir, tmp_path, argv, words, capsys):
    import evaluate
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--ckpt", model_dir, *argv])
    text = str(e.value.code) + capsys.readouterr().err
    assert words in text and "Traceback" not in text


def test_evaluate_n_0_reads_every_row(model_dir, tmp_path):
    import evaluate
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(dict(question=f"What is {i} + 1?", answer=str(i + 1))) + "\n" for i in range(3)))
    evaluate.main(["--ckpt", model_dir, "--data", str(path), "--n", "0", "--json", str(tmp_path / "e.json"),
                   "--no-plots", "--max-new-tokens", "4"])
    results = json.load(open(tmp_path / "e.json"))["results"]
    assert next(iter(next(iter(results.values())).values()))["n"] == 3
