"""experiment.py --quick: every arm trains, is evaluated and gets a row of numbers; --from-logs and --resume."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import ccrl
import experiment
import sft_comt
from comt import checkpoint, lifecycle
from conftest import RL, SFT, locked_by_another_process, stopped
from experiment import DEFAULT_ARMS

ROOT = __file__.rsplit("/tests/", 1)[0]


@pytest.mark.cli
def test_quick_experiment_produces_every_arm(tmp_path):
    out = tmp_path / "exp"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "experiment.py", "--quick", "--out", str(out)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    for arm in DEFAULT_ARMS:
        assert (out / "seed0" / arm / "model.safetensors").is_file(), arm
    saved = json.loads((out / "results.json").read_text())
    ev = saved["aggregate"]["eval"]
    assert set(ev) == set(DEFAULT_ARMS) == {"cot_sft", "comt_sft", "cot_grpo", "comt_ccrl", "comt_grpo", "cot_ccrl"}
    for arm in DEFAULT_ARMS:
        assert list(ev[arm]) == ["test", "ood_template", "ood_steps", "ood_numbers", "ood_distractor", "ood_pooled"]
        assert all(0 <= a <= 1 for a in ev[arm]["test"]["acc"])
    costs = saved["aggregate"]["costs"]
    assert costs["cot_sft"]["sup_tokens"][0] > 0 and costs["comt_sft"]["sup_tokens"][0] > 0
    md = (out / "results.md").read_text()
    assert all(f"| {arm} |" in md for arm in DEFAULT_ARMS)
    assert (out / "results_accuracy.png").is_file() and (out / "results_reliability.png").is_file()
    assert (out / "results_cost.png").is_file() and "| CoMT-SFT + CCRL | 85% |" in md
    for arm in DEFAULT_ARMS:  # a pipeline's curve: its SFT stage's checks, then its own, the tokens adding up
        curve = saved["curves"][arm][0]
        assert [p["step"] for p in curve] == ([2, 4] if arm.endswith("_sft") else [2, 4, 2])
        assert all(a["tokens"] < b["tokens"] for a, b in zip(curve, curve[1:]))

    # --from-logs rebuilds the same numbers from the run's files without training anything
    res = subprocess.run([sys.executable, "experiment.py", "--quick", "--out", str(out), "--from-logs", "--results",
                          str(tmp_path / "again")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    again = json.loads((tmp_path / "again.json").read_text())
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # nan-safe
    assert same(again["aggregate"]["eval"], saved["aggregate"]["eval"])
    assert again["aggregate"]["costs"]["comt_sft"]["sup_tokens"] == costs["comt_sft"]["sup_tokens"]
    assert all(w > 0 for arm in DEFAULT_ARMS for w in again["aggregate"]["costs"][arm]["wall_seconds"])

    # --resume after a kill during comt_ccrl: the finished arms are kept as they are, the cut one reruns
    log = out / "seed0" / "comt_ccrl.log"
    log.write_text(log.read_text().split('{"summary": true', 1)[0])  # the stage died before its summary
    weights = lambda arm: out / "seed0" / arm / "model.safetensors"
    kept = {arm: (weights(arm).read_bytes(), weights(arm).stat().st_mtime_ns) for arm in ("cot_sft", "cot_grpo")}
    res = subprocess.run([sys.executable, "experiment.py", "--quick", "--out", str(out), "--resume", "--results",
                          str(tmp_path / "resumed")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert all((weights(arm).read_bytes(), weights(arm).stat().st_mtime_ns) == kept[arm] for arm in kept)
    assert '"summary": true' in log.read_text() and "$ ccrl.py --reward ccrl" in res.stdout
    assert "--reward outcome" not in res.stdout
    assert "$ evaluate.py" in res.stdout and "$ sft_comt.py" not in res.stdout

    # --resume after a stop during comt_grpo, which saved a checkpoint at step 1 of 2: it continues from there
    import experiment
    cmd = experiment.stage_command(experiment.parse_args(["--quick", "--out", str(out)]), 0, "comt_grpo")
    shutil.rmtree(out / "seed0" / "comt_grpo")
    glog = out / "seed0" / "comt_grpo.log"
    glog.write_text(json.dumps(dict(stage_start=True, command=cmd)) + "\n")
    with open(glog, "a") as f:
        subprocess.run([sys.executable, *cmd, "--stop-at", "1"], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    res = subprocess.run([sys.executable, "experiment.py", "--quick", "--out", str(out), "--resume", "--results",
                          str(tmp_path / "resumed2")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "resumed: " in res.stdout and "--resume" in res.stdout and "resuming" in glog.read_text()
    assert experiment.stage_record(str(glog))["steps"] == 2

    # --from-logs names what made the numbers: an evaluation or a base row made by other flags is refused, not redone
    for name in ("seed0/eval.log", "base_plan.log"):
        path = out / name
        text = path.read_text()
        path.write_text(text.replace('"--n", "4"', '"--n", "2"'))
        before = (out / "base_plan.json").stat().st_mtime_ns
        res = subprocess.run([sys.executable, "experiment.py", "--quick", "--out", str(out), "--from-logs", "--results",
                              str(tmp_path / "mixed")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode != 0 and f"{name.split('/')[-1]} was made by" in res.stderr, res.stderr[-2000:]
        assert "Traceback" not in res.stderr and (out / "base_plan.json").stat().st_mtime_ns == before
        path.write_text(text)


@pytest.mark.cli
@pytest.mark.hostile
def test_sigterm_stops_the_running_stage_which_saves_first(model_dir, tmp_path):
    """What a scheduler sends: the experiment passes it on, the stage saves a checkpoint and stops, and
    the experiment ends after it (no stage left training on, orphaned)."""
    import signal
    import time

    from comt.lifecycle import lock_held
    out, log = tmp_path / "stage", tmp_path / "stage.log"
    cmd = ["sft_comt.py", "--model", model_dir, "--out", str(out), "--n-train", "32", "--batch", "4", "--steps", "5000",
           "--eval-n", "0", "--save-every", "100000", "--log-every", "1"]
    driver = subprocess.Popen([sys.executable, "-c", f"import experiment; experiment.run_stage({cmd!r}, {str(log)!r})"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (out / "log.jsonl").is_file() or '"step": 3' not in (out / "log.jsonl").read_text():
        assert time.time() - t0 < 120 and driver.poll() is None, "the stage did not start"
        time.sleep(0.2)
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode != 0 and "stage was stopped before its end" in err, err[-2000:]
    assert not lock_held(str(out))  # the stage has ended too
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert 0 < state["step"] < 5000


@pytest.mark.hostile
def test_a_stage_folder_in_use_is_never_deleted(tmp_path):
    import experiment
    from conftest import locked_by_another_process
    ckpt = tmp_path / "seed0" / "comt_sft"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"weights")
    with locked_by_another_process(str(ckpt)):
        with pytest.raises(SystemExit, match="in use by a running stage"):
            experiment.finished_or_run(["sft_comt.py", "--out", str(ckpt)], str(tmp_path / "comt_sft.log"), str(ckpt),
                                       keep=True)
    assert (ckpt / "model.safetensors").read_bytes() == b"weights"


@pytest.mark.hostile
def test_a_malformed_build_json_is_one_line_before_any_work(tmp_path):
    import experiment
    base = tmp_path / "base"
    shutil.copytree(os.path.join(ROOT, "models", "base"), base)
    (base / "build.json").write_text('{"cut": ')
    with pytest.raises(SystemExit, match="its build.json cannot be read"):
        experiment.main(["--base", str(base), "--out", str(tmp_path / "exp"), "--results", str(tmp_path / "r")])
    assert not (tmp_path / "exp" / "base_plan.log").exists()


def test_update_readme_replaces_only_the_marked_block(tmp_path):
    from experiment import update_readme
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold table\n<!-- results:end -->\noutro\n")
    assert update_readme("| new |\n", str(readme))
    assert readme.read_text() == "intro\n<!-- results:start -->\n| new |\n<!-- results:end -->\noutro\n"
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    assert not update_readme("| new |\n", str(plain)) and plain.read_text() == "no markers\n"


def test_arms_bring_the_sft_arms_they_start_from():
    import pytest

    from experiment import with_parents
    assert with_parents(["comt_grpo", "cot_ccrl"]) == ["cot_sft", "comt_sft", "comt_grpo", "cot_ccrl"]
    assert with_parents(["comt_ccrl"]) == ["comt_sft", "comt_ccrl"]
    assert with_parents(DEFAULT_ARMS) == DEFAULT_ARMS
    with pytest.raises(SystemExit, match="unknown ccrl"):
        with_parents(["ccrl"])


def test_experiment_refuses_a_seed_twice_and_budgets_that_would_not_apply(capsys):
    import experiment
    for argv, words in ((["--seeds", "0", "0"], "a seed given twice"),
                        (["--quick", "--rl-steps", "5"], "--quick sets its own budgets: --rl-steps")):
        with pytest.raises(SystemExit):
            experiment.parse_args(argv)
        assert words in capsys.readouterr().err


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
        assert os.listdir(out) == [checkpoint.LOCK_FILE]  # the running one's lock, nothing else
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
