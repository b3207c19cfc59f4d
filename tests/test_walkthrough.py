"""The classroom walkthrough: a valid percent-format file whose sections match its README, the smoke
profile end to end, and exercise checkers that accept the solutions and reject stubs and mutants."""
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WALK = os.path.join(ROOT, "walkthrough")
sys.path.insert(0, WALK)

import exercises  # noqa: E402
import solutions  # noqa: E402


def cells(path: str) -> list[tuple[str, str]]:
    """(kind, text) of each cell of a percent-format file: kind 'markdown' or 'code'."""
    out = []
    for line in open(path).read().splitlines():
        if line.startswith("# %%"):
            out.append(("markdown" if "[markdown]" in line else "code", ""))
        elif out:
            out[-1] = (out[-1][0], out[-1][1] + line + "\n")
    return out


def section_titles(path: str) -> list[str]:
    return [m.group(1) for kind, text in cells(path) if kind == "markdown"
            for m in re.finditer(r"^# ## (\d+\. .+)$", text, re.M)]


def test_the_file_is_percent_format_with_sections_in_order_matching_its_readme():
    path = os.path.join(WALK, "walkthrough.py")
    assert open(path).readline().startswith("# %% [markdown]")
    kinds = [k for k, _ in cells(path)]
    assert kinds.count("markdown") >= 13 and kinds.count("code") >= 13
    assert all(text.strip() == "" or line.startswith("#") for k, text in cells(path) if k == "markdown"
               for line in text.strip().splitlines())  # markdown cells are comments only
    titles = section_titles(path)
    assert [int(t.split(".")[0]) for t in titles] == list(range(13))
    table = re.findall(r"^\| (\d+\. [^|]+?) \|", open(os.path.join(WALK, "README.md")).read(), re.M)
    assert [t.split(":")[0] for t in titles] == table


@pytest.mark.cli
def test_smoke_profile_runs_every_section(tmp_path):
    out = tmp_path / "walk"
    env = dict(os.environ, COMT_WALK="smoke", COMT_WALK_OUT=str(out), OMP_NUM_THREADS="2")
    r = subprocess.run([sys.executable, "walkthrough/walkthrough.py"], cwd=ROOT, env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    done = json.load(open(out / "sections.json"))["seconds"]
    assert [int(name.split(".")[0]) for name in done] == list(range(1, 13))
    assert r.stdout.count(": ok, ") == 12 and "[section 12. where next: ok" in r.stdout
    assert len(list((out / "figures").glob("*.png"))) == 11
    page = (out / "examples.html").read_text()
    assert "<script" not in page and page.count("<h2>") == 3


def every_token(tok, p, fmt):
    from comt.tasks import encode_example
    return len(encode_example(tok, p, fmt)[0])


def last_step_zero_spread(log):
    return [json.loads(line) for line in open(log) if "zero_spread" in line][-1]["zero_spread"]


MUTANTS = {  # name -> a wrong answer each checker must reject
    "supervised_tokens": every_token,  # counts the prompt too
    "aggregate_confidence": lambda lps, agg: (sum(math.exp(x) for x in lps) / len(lps) if agg == "geo"
                                              else solutions.aggregate_confidence(lps, agg)),
    "signed_term": lambda confs, rights, ok, missing: solutions.signed_term(confs, rights, ok, 0),
    "zscore": lambda r: (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-6),
    "kept_by_filter": lambda correct: any(correct),
    "all_wrong_but_spread": lambda lam: [(False, -0.5)] * 4,
    "best_wrong_reward": lambda lam, form: lam,
    "sft_loss": lambda model, ids, sup: torch.nn.functional.cross_entropy(model(ids)[:, :-1].flatten(0, 1),
                                                                          ids[:, 1:].flatten()),
    "replay_effect": lambda a, b: solutions.replay_effect(a, b)[::-1],
    "zero_spread_share": last_step_zero_spread,
}


def fake_logs(tmp_path, name: str) -> dict:
    """Small finished-run logs for the two exercises that read runs."""
    def write(path, rows):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(path)
    if name == "replay_effect":
        return dict(logs=(write(tmp_path / "a" / "log.jsonl", [dict(step=0, loss=1.0), dict(summary=True, replay=0.25,
                                                                                             test_acc=0.8)]),
                          write(tmp_path / "b" / "log.jsonl", [dict(summary=True, replay=0.0, test_acc=0.05)])))
    if name == "zero_spread_share":
        return dict(logs=(write(tmp_path / "o" / "log.jsonl", [dict(step=0, zero_spread=0.5),
                                                               dict(step=1, zero_spread=0.75), dict(summary=True)]),))
    return {}


@pytest.mark.parametrize("name", list(exercises.EXERCISES))
def test_each_checker_accepts_its_solution_and_rejects_the_stub_and_a_mutant(name, tmp_path):
    stub, check = exercises.EXERCISES[name]
    kw = fake_logs(tmp_path, name)
    check(getattr(solutions, name), **kw)
    with pytest.raises(NotImplementedError):
        check(stub, **kw)
    with pytest.raises(AssertionError):
        check(MUTANTS[name], **kw)


@pytest.mark.slow
def test_it_runs_under_a_jupyter_kernel(tmp_path):
    if any(importlib.util.find_spec(m) is None for m in ("jupytext", "nbclient", "ipykernel")):
        pytest.skip("jupytext, nbclient and ipykernel are not installed")
    import jupytext
    from nbclient import NotebookClient
    nb = jupytext.read(os.path.join(WALK, "walkthrough.py"))
    os.environ.update(COMT_WALK="smoke", COMT_WALK_OUT=str(tmp_path / "walk"))
    NotebookClient(nb, timeout=600, resources={"metadata": {"path": WALK}}).execute()
    assert json.load(open(tmp_path / "walk" / "sections.json"))["seconds"]


@pytest.mark.slow
def test_the_class_profile_fits_a_class_period(tmp_path):
    env = dict(os.environ, COMT_WALK="class", COMT_WALK_OUT=str(tmp_path / "walk"))
    t0 = time.time()
    subprocess.run([sys.executable, "walkthrough/walkthrough.py"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    assert time.time() - t0 <= 15 * 60
