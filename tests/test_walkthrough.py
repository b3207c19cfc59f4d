"""The classroom walkthrough: a valid percent-format file whose sections match its README, the smoke
profile end to end, and exercise checkers that accept the solutions and reject stubs and mutants."""
import importlib.util
import json
import math
import os
import re
import shutil
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


def fake_logs(tmp_path, name: str, **changed) -> dict:
    """Small finished runs (a log and the arguments in its checkpoint's training state) for the two
    exercises that read runs; `changed`: flags of the second run that differ from what the exercise asks."""
    import ccrl
    import sft_comt

    def run(folder, rows, args):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        torch.save(dict(step=args["steps"], args=args, totals={}), folder / "train_state.pt")
        return str(folder / "log.jsonl")
    if name == "replay_effect":
        args = lambda out, *flags: dict(vars(sft_comt.parse_args(["--out", str(out), *flags])))
        return dict(logs=(run(tmp_path / "a", [dict(step=0, loss=1.0), dict(summary=True, replay=0.25, test_acc=0.8)],
                              args(tmp_path / "a")),
                          run(tmp_path / "b", [dict(summary=True, replay=0.0, test_acc=0.05)],
                              {**args(tmp_path / "b", "--replay", "0"), **changed})))
    if name == "zero_spread_share":
        args = lambda out, *flags: dict(vars(ccrl.parse_args(["--out", str(out), "--steps", "2", *flags])))
        rows = lambda *z: [dict(step=i, zero_spread=x) for i, x in enumerate(z)] + [dict(summary=True)]
        return dict(logs=(run(tmp_path / "o", rows(0.5, 0.75), args(tmp_path / "o", "--reward", "outcome")),
                          run(tmp_path / "c", rows(0.25, 0.0), {**args(tmp_path / "c"), **changed})))
    return {}


@pytest.mark.parametrize("name", list(exercises.EXERCISES))
def test_each_checker_accepts_its_solution_and_rejects_the_stub_and_a_mutant(name, tmp_path):
    stub, check = exercises.EXERCISES[name]
    kw = fake_logs(tmp_path, name)
    check(getattr(solutions, name), **kw)
    with pytest.raises(NotImplementedError):
        check(stub, **kw)
    with pytest.raises(AssertionError, match="."):  # (never an empty message)
        check(MUTANTS[name], **kw)


def test_the_loss_checker_names_an_off_by_one_mask():
    with pytest.raises(AssertionError, match="mask shifted by one"):
        exercises.check_sft_loss(exercises.shifted_mask_loss)


@pytest.mark.hostile
@pytest.mark.parametrize("name,changed", [("replay_effect", dict(steps=5)), ("replay_effect", dict(seed=1)),
                                          ("zero_spread_share", dict(steps=3)),
                                          ("zero_spread_share", dict(reward="outcome"))])
def test_the_run_checkers_accept_only_the_runs_the_exercise_asks_for(name, changed, tmp_path):
    kw = fake_logs(tmp_path, name, **changed)
    with pytest.raises(AssertionError, match="."):
        exercises.EXERCISES[name][1](getattr(solutions, name), **kw)


@pytest.mark.hostile
def test_the_same_log_twice_is_not_two_runs(tmp_path):
    logs = fake_logs(tmp_path, "zero_spread_share")["logs"]
    with pytest.raises(AssertionError, match="the same log twice|rewards"):
        exercises.check_zero_spread_share(solutions.zero_spread_share, logs=(logs[1], logs[1]))


@pytest.mark.hostile
def test_an_answer_of_the_wrong_kind_does_not_stop_the_checking_and_unknown_flags_are_refused(capsys, monkeypatch):
    monkeypatch.setattr(exercises, "zscore", lambda r: "not a tensor")
    monkeypatch.setattr(exercises, "kept_by_filter", solutions.kept_by_filter)
    exercises.main(["zscore", "kept_by_filter"])
    out = capsys.readouterr().out
    assert "zscore: not yet: it raised" in out and "kept_by_filter: pass" in out
    with pytest.raises(SystemExit):
        exercises.main(["--solution"])
    assert "unrecognized arguments: --solution" in capsys.readouterr().err


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
    inline = [c for c in nb.cells if c.cell_type == "code" and any("image/png" in o.get("data", {}) for o in c.outputs)]
    saved = sorted(os.listdir(tmp_path / "walk" / "figures"))
    assert len(inline) == len(saved) == 11, (len(inline), saved)  # every section's figure, inline where it is drawn


@pytest.mark.slow
def test_the_class_profile_fits_a_class_period(tmp_path):
    env = dict(os.environ, COMT_WALK="class", COMT_WALK_OUT=str(tmp_path / "walk"))
    t0 = time.time()
    subprocess.run([sys.executable, "walkthrough/walkthrough.py"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    assert time.time() - t0 <= 10 * 60


# -- the walkthrough's bench (walkthrough/lab.py): its output folder, and reuse decided by the run itself --

import lab  # noqa: E402

TINY_SFT = ["--n-train", "32", "--batch", "4", "--steps", "2", "--eval-n", "0"]


def tiny_stage_runs(model_dir, tmp_path):
    """A tiny stage-1 run and a tiny stage-2 run from it, as the walkthrough runs them."""
    sft, rl = str(tmp_path / "sft"), str(tmp_path / "rl")
    rl_args = ["--init", sft, "--n-train", "32", "--steps", "2", "--prompts-per-step", "2", "--group-size", "2",
               "--max-new-tokens", "8", "--eval-n", "0"]
    lab.stage("sft_comt.py", ["--model", model_dir, *TINY_SFT], sft)
    lab.stage("ccrl.py", rl_args, rl)
    return sft, rl, rl_args


@pytest.mark.cli
@pytest.mark.hostile
def test_a_stage_is_reused_only_when_its_run_records_this_command_its_start_and_todays_code(model_dir, tmp_path,
                                                                                           monkeypatch):
    sft, rl, rl_args = tiny_stage_runs(model_dir, tmp_path)
    sft_args = ["--model", model_dir, *TINY_SFT]
    assert lab.verdict("sft_comt.py", sft_args, sft) == lab.verdict("ccrl.py", rl_args, rl) == "reuse"
    assert lab.verdict("sft_comt.py", [*sft_args, "--lr", "1e-3"], sft).startswith("rerun: made with other flags (--lr)")
    monkeypatch.setattr(lab, "code_version", lambda: "other")
    assert lab.verdict("sft_comt.py", sft_args, sft) == "rerun: made by other code than today's"
    monkeypatch.undo()
    # stage 1 trained again (a later run in its folder): stage 2, trained from the earlier one, is not reused
    os.utime(os.path.join(sft, "model.safetensors"), ns=(1, 1))
    assert lab.verdict("ccrl.py", rl_args, rl) == f"rerun: {sft}, where it started, has changed since"
    lab.stage("ccrl.py", rl_args, rl)
    assert lab.verdict("ccrl.py", rl_args, rl) == "reuse"


@pytest.mark.cli
@pytest.mark.hostile
def test_an_interrupted_stage_continues_and_one_finished_by_hand_is_kept(model_dir, tmp_path, capsys):
    out, args = str(tmp_path / "sft"), ["--model", model_dir, *TINY_SFT]
    subprocess.run([sys.executable, "sft_comt.py", *args, "--out", out, "--stop-at", "1"], cwd=ROOT,
                   capture_output=True)
    assert lab.verdict("sft_comt.py", args, out) == "resume"
    lab.stage("sft_comt.py", args, out)
    assert "continuing from its checkpoint" in capsys.readouterr().out
    assert lab.verdict("sft_comt.py", args, out) == "reuse"
    by_hand = str(tmp_path / "by_hand")  # the same command run in a terminal: the walkthrough keeps it
    subprocess.run([sys.executable, "sft_comt.py", *args, "--out", by_hand], cwd=ROOT, capture_output=True)
    before = os.stat(os.path.join(by_hand, "model.safetensors")).st_mtime_ns
    lab.stage("sft_comt.py", args, by_hand)
    assert "reusing" in capsys.readouterr().out
    assert os.stat(os.path.join(by_hand, "model.safetensors")).st_mtime_ns == before


@pytest.mark.cli
@pytest.mark.hostile
def test_an_evaluation_is_reused_only_while_its_checkpoints_are_the_ones_it_read(model_dir, tmp_path, capsys):
    ck = str(tmp_path / "ck")
    shutil.copytree(model_dir, ck)
    path, flags = str(tmp_path / "e.json"), ["--splits", "test", "--n", "2", "--max-new-tokens", "4", "--no-plots"]
    lab.evaluation([ck], flags, path)
    made = os.stat(path).st_mtime_ns
    lab.evaluation([ck], flags, path)
    assert os.stat(path).st_mtime_ns == made  # reused
    os.utime(os.path.join(ck, "model.safetensors"), ns=(1, 1))  # other weights now
    lab.evaluation([ck], flags, path)
    assert os.stat(path).st_mtime_ns != made
    with open(os.path.join(ck, "model.safetensors"), "r+b") as f:  # cut: evaluate.py fails, and says why
        f.truncate(100)
    with pytest.raises(SystemExit, match="evaluate.py failed"):
        lab.evaluation([ck], flags, path)
    assert "cannot read model.safetensors" in capsys.readouterr().err


@pytest.mark.hostile
def test_the_output_folder_is_refused_when_a_file_or_holding_links_and_an_empty_name_is_unset(tmp_path, monkeypatch):
    outside = tmp_path / "precious.txt"
    outside.write_text("mine")
    cases = {"a file": lambda out: out.write_text("x"),
             "figures a file": lambda out: (out.mkdir(), (out / "figures").write_text("x")),
             "a link inside": lambda out: (out.mkdir(), (out / "sections.json").symlink_to(outside)),
             "a linked figure": lambda out: ((out / "figures").mkdir(parents=True),
                                             (out / "figures" / "1_base.png").symlink_to(outside))}
    for name, make in cases.items():
        out = tmp_path / name.replace(" ", "_")
        make(out)
        monkeypatch.setenv("COMT_WALK_OUT", str(out))
        with pytest.raises(SystemExit):
            lab.output_folder("smoke")
    assert outside.read_text() == "mine"
    monkeypatch.setenv("COMT_WALK_OUT", "")
    monkeypatch.chdir(tmp_path)
    assert lab.output_folder("smoke") == os.path.join(ROOT, "runs", "walk_smoke")


@pytest.mark.hostile
def test_files_are_written_by_replacing_never_through_a_link(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from comt.common import write_json
    outside = tmp_path / "precious.txt"
    outside.write_text("mine")
    out = tmp_path / "walk"
    (out / "figures").mkdir(parents=True)
    for path in (out / "figures" / "1_base.png", out / "examples.html", out / "eval.json"):
        path.symlink_to(outside)
    lab.save(plt.subplots()[0], str(out), "1_base", inline=False)
    lab.write_page(str(out / "examples.html"), "<p>page</p>")
    write_json({"results": {}}, str(out / "eval.json"))  # (evaluate.py's JSON)
    assert outside.read_text() == "mine"
    assert not any(p.is_symlink() for p in out.rglob("*")) and (out / "examples.html").read_text() == "<p>page</p>"
