"""What a run directory will not let happen: code run from a crafted file, writes through a symlink,
a user's files or another script's run overwritten, a resume that changes bytes before it is known
to be valid or that continues on changed inputs, two experiments on one --out, a stopped run that
looks finished. Each test fails on the code before these rules (commit cbcd114)."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import ccrl
from conftest import locked_by_another_process, stopped
import experiment
from comt import lifecycle
import sft_comt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SFT = ["--n-train", "48", "--batch", "8", "--micro-batch", "4", "--steps", "4", "--warmup", "1", "--log-every", "1",
       "--eval-n", "0", "--save-every", "2"]
RL = ["--n-train", "16", "--steps", "2", "--prompts-per-step", "2", "--group-size", "2", "--max-new-tokens", "12",
      "--eval-n", "0", "--save-every", "1"]


def tree_digest(path) -> dict:
    """sha256 of every file under path (symlinks by their target), by relative name."""
    out = {}
    for folder, _, files in os.walk(path):
        for name in files:
            p = os.path.join(folder, name)
            data = os.readlink(p).encode() if os.path.islink(p) else open(p, "rb").read()
            out[os.path.relpath(p, path)] = hashlib.sha256(data).hexdigest()
    return out


class Planted:
    """Unpickling this opens (creates) a file: stands for any code a crafted pickle could run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_crafted_training_state_runs_no_code(model_dir, tmp_path):
    out, marker = tmp_path / "o", tmp_path / "ran"
    out.mkdir()
    (out / lifecycle.RUN_FILE).write_text(json.dumps(dict(script="sft_comt.py")))  # a run of this script, so it is read
    torch.save(dict(step=1, args=dict(steps=4), planted=Planted(str(marker))), out / lifecycle.STATE_FILE)
    with pytest.raises(SystemExit, match="not a readable training state"):
        sft_comt.main(["--model", model_dir, "--out", str(out), *SFT])
    assert not marker.exists()


def test_a_symlink_inside_out_is_refused_not_followed(model_dir, tmp_path):
    out, outside = tmp_path / "o", tmp_path / "precious.txt"
    sft_comt.main(["--model", model_dir, "--out", str(out), *SFT])
    outside.write_text("keep me\n")
    os.remove(out / "log.jsonl")
    os.symlink(outside, out / "log.jsonl")
    before = tree_digest(out)
    with pytest.raises(SystemExit, match="symbolic link"):
        sft_comt.main(["--model", model_dir, "--out", str(out), *SFT])
    assert outside.read_text() == "keep me\n" and tree_digest(out) == before


def test_a_directory_that_is_not_this_scripts_run_is_refused_untouched(model_dir, tmp_path):
    user = tmp_path / "user"
    (user / ".partial").mkdir(parents=True)
    (user / ".partial" / "notes.txt").write_text("mine")
    (user / "log.jsonl").write_text('{"my": "log"}\n')
    (user / "config.json").write_text("{}")
    before = tree_digest(user)
    with pytest.raises(SystemExit, match="files that are not a run"):
        sft_comt.main(["--model", model_dir, "--out", str(user), *SFT])
    assert tree_digest(user) == before
    sft = str(tmp_path / "sft")
    sft_comt.main(["--model", model_dir, "--out", sft, *SFT])
    before = tree_digest(sft)
    with pytest.raises(SystemExit, match="the checkpoint this run starts from"):
        ccrl.main(["--init", sft, "--out", sft, *RL])
    with pytest.raises(SystemExit, match="holds a run of sft_comt.py"):
        ccrl.main(["--init", model_dir, "--out", sft, *RL])
    with pytest.raises(SystemExit, match="holds a run of sft_comt.py"):  # a failed resume changes nothing
        ccrl.main(["--out", sft, "--resume"])
    assert tree_digest(sft) == before
    base = tmp_path / "base"  # a finished base build, as the shipped models/base is
    shutil.copytree(model_dir, base)
    shutil.copy(os.path.join(ROOT, "models", "base", "run.json"), base)
    with pytest.raises(SystemExit, match="holds a run of base.py"):
        sft_comt.main(["--model", model_dir, "--out", str(base), *SFT])
    file = tmp_path / "a_file"
    file.write_text("x")
    with pytest.raises(SystemExit, match="is a file"):
        sft_comt.main(["--model", model_dir, "--out", str(file), *SFT])


def test_a_new_run_keeps_the_finished_one_whole_until_its_first_checkpoint(model_dir, tmp_path, monkeypatch):
    out = str(tmp_path / "o")
    sft_comt.main(["--model", model_dir, "--out", out, *SFT])
    before = tree_digest(out)

    class Killed(BaseException):
        pass

    def die(*a, **k):
        raise Killed
    with monkeypatch.context() as m:  # killed after two logged steps, before its first checkpoint
        m.setattr(lifecycle, "save_checkpoint", die)
        with pytest.raises(Killed):
            sft_comt.main(["--model", model_dir, "--out", out, *SFT, "--seed", "1"])
    assert {k: v for k, v in tree_digest(out).items() if not k.startswith(lifecycle.PARTIAL)} == before
    sft_comt.main(["--model", model_dir, "--out", out, *SFT, "--seed", "1", "--steps", "2"])
    rows = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    assert [r["step"] for r in rows if "loss" in r] == [0, 1] and rows[-1]["steps"] == 2  # the new run only
    assert not os.path.exists(os.path.join(out, lifecycle.PARTIAL))


def test_a_resume_on_changed_inputs_is_refused_before_any_byte_changes(model_dir, tmp_path):
    from comt.tasks import make_split
    data, targets, out = tmp_path / "d.jsonl", tmp_path / "t.jsonl", str(tmp_path / "o")
    problems = make_split("train", 48)
    rows = [dict(id=p.id, question=p.question, answer=p.answer) for p in problems]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    targets.write_text("".join(json.dumps(dict(id=p.id, plan=p.plan)) + "\n" for p in problems))
    stopped(sft_comt.main, ["--model", model_dir, "--out", out, *SFT, "--data", str(data), "--targets", str(targets),
                            "--stop-at", "2"])
    with open(os.path.join(out, "log.jsonl"), "a") as f:  # a line past the checkpoint, that a resume would cut
        f.write(json.dumps(dict(step=2, loss=1.0)) + "\n")
    before = tree_digest(out)
    rows[0]["question"] += " Think."
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit, match="training data .* changed since the checkpoint"):
        sft_comt.main(["--out", out, "--resume"])
    os.remove(data)
    with pytest.raises(SystemExit, match="--data"):
        sft_comt.main(["--out", out, "--resume"])
    assert tree_digest(out) == before


def test_a_changed_kl_reference_is_refused_on_resume(model_dir, tmp_path):
    init, out = tmp_path / "init", str(tmp_path / "o")
    shutil.copytree(model_dir, init)
    stopped(ccrl.main, ["--init", str(init), "--out", out, *RL, "--kl-coef", "0.1", "--stop-at", "1"])
    from safetensors.torch import load_file, save_file
    weights = {k: v * 1.01 for k, v in load_file(init / "model.safetensors").items()}
    save_file(weights, init / "model.safetensors", metadata={"format": "pt"})
    before = tree_digest(out)
    with pytest.raises(SystemExit, match="KL reference model .* changed"):
        ccrl.main(["--out", out, "--resume"])
    assert tree_digest(out) == before


def test_a_stopped_stage_warns_the_next_one_and_the_experiment(model_dir, tmp_path, capsys):
    cut = str(tmp_path / "cut")
    stopped(sft_comt.main, ["--model", model_dir, "--out", cut, *SFT, "--stop-at", "2"])  # exit STOPPED, not 0
    capsys.readouterr()
    ccrl.main(["--init", cut, "--out", str(tmp_path / "rl"), *RL])
    assert capsys.readouterr().err.lstrip().startswith(f"--init {cut}: an unfinished run (stopped after step 2 of 4)")
    with pytest.raises(SystemExit, match=r"stage was stopped before its end \(exit 3\)"):
        experiment.run_stage(["-c", f"raise SystemExit({lifecycle.STOPPED})"], str(tmp_path / "stage.log"))
    assert experiment.stage_record(str(tmp_path / "stage.log")) is None


def test_two_experiments_on_one_out_and_a_resume_by_another_command(tmp_path, monkeypatch):
    out = str(tmp_path / "exp")
    os.makedirs(out)
    with locked_by_another_process(out):
        with pytest.raises(SystemExit, match="another run is using this directory"):
            experiment.main(["--quick", "--out", out])
        assert os.listdir(out) == [lifecycle.LOCK_FILE]  # the running one's lock, nothing else
    log = str(tmp_path / "arm.log")
    old = ["sft_comt.py", "--steps", "4"]
    with open(log, "w") as f:
        f.write(json.dumps(dict(summary=True, steps=4)) + "\n" + json.dumps(dict(stage_wall_seconds=1.0, command=old))
                + "\n")
    ran = []
    monkeypatch.setattr(experiment, "run_stage", lambda cmd, path: ran.append(cmd) or dict(summary=True))
    assert experiment.finished_or_run(old, log, None, keep=True) == ({**dict(summary=True, steps=4),
                                                                       "curve": [], "wall_seconds": 1.0,
                                                                       "stage_command": old,
                                                                       "stage_code": None}, False)
    experiment.finished_or_run(["sft_comt.py", "--steps", "8"], log, None, keep=True)
    assert ran == [["sft_comt.py", "--steps", "8"]]
    args = experiment.parse_args(["--eval-n", "7", "--base", "elsewhere"])
    assert "--eval-n 7" in experiment.produced_by(args) and "--base elsewhere" in experiment.produced_by(args)


def test_json_written_is_strict_and_gold_answers_are_exact(model_dir, tmp_path):
    from comt.tasks import read_jsonl
    out = str(tmp_path / "o")
    ccrl.main(["--init", model_dir, "--out", out, *RL])  # a random model: nothing to measure for some metrics
    lines = open(os.path.join(out, "log.jsonl")).read().splitlines()
    assert [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in {line}")) for line in lines]
    assert "null" in "".join(lines)
    path = tmp_path / "big.jsonl"
    path.write_text('{"question": "q", "answer": 123456789012345678.0}\n{"question": "q", "answer": 0.1}\n')
    assert [p.answer for p in read_jsonl(str(path))] == ["123456789012345678", "0.1"]


def test_weights_are_written_readable_like_the_other_files(model_dir, tmp_path):
    out = tmp_path / "o"
    old = os.umask(0o022)
    try:
        sft_comt.main(["--model", model_dir, "--out", str(out), *SFT, "--steps", "1"])
    finally:
        os.umask(old)
    assert oct(os.stat(out / "model.safetensors").st_mode & 0o777) == oct(0o644)


def test_a_failed_write_is_one_line_and_keeps_the_checkpoint(model_dir, tmp_path, monkeypatch):
    out = str(tmp_path / "o")
    stopped(sft_comt.main, ["--model", model_dir, "--out", out, *SFT, "--stop-at", "2"])
    before = tree_digest(out)

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4224 vs 4118")
    monkeypatch.setattr(lifecycle.torch, "save", full)
    with pytest.raises(SystemExit, match=r"cannot write a checkpoint in .* the last complete checkpoint there is "
                                         r"untouched"):
        sft_comt.main(["--out", out, "--resume"])
    monkeypatch.undo()
    assert {k: v for k, v in tree_digest(out).items() if k != "log.jsonl"} == \
        {k: v for k, v in before.items() if k != "log.jsonl"}
    sft_comt.main(["--out", out, "--resume"])  # and it resumes from there


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


def test_printed_model_text_shows_control_characters(capsys):
    from comt.show import Mark, render_ansi, render_plain
    text = "x = 2 + 2 = 4\x1b]0;owned\x07\x1b[2J"
    for render in (render_plain, render_ansi):
        shown = render(text, [Mark(12, 13, 0.9, True)])
        assert "\x07" not in shown and "\\x1b]0;owned\\x07\\x1b[2J" in shown
    r = subprocess.run([sys.executable, "-m", "comt.show", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("usage: python -m comt.show")
