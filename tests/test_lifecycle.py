"""comt/lifecycle.py: a run's directory, claimed, refused and resumed through the stages' own commands."""
import json
import os
import shutil
import sys

import pytest

import ccrl
import sft_comt
from comt import checkpoint
from conftest import COMMON, RL, SFT, one_line, run_sft, stopped, torchrun, tree_digest, without_file_mode_override


@pytest.mark.cli
def test_a_run_cannot_be_shortened_on_resume(model_dir, tmp_path):
    out = str(tmp_path / "o")
    stopped(sft_comt.main, ["--model", model_dir, "--out", out, *COMMON, "--stop-at", "4"])
    before = sorted(os.listdir(out))
    with pytest.raises(SystemExit, match="--steps 2 is below the checkpoint's step 4"):
        sft_comt.main(["--out", out, "--resume", "--steps", "2"])
    assert sorted(os.listdir(out)) == before


@pytest.mark.cli
def test_a_read_only_out_is_one_line(model_dir, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    out.chmod(0o555)
    res = run_sft(["--model", model_dir, "--out", str(out), *COMMON], check=False,
                  launcher=(*without_file_mode_override(), sys.executable))
    assert "choose a directory you can write" in one_line(res) and os.listdir(out) == []


def test_refusals_name_their_cause(model_dir, tmp_path):
    from comt.common import check_checkpoint
    out = tmp_path / "o"
    out.mkdir()
    (out / checkpoint.RUN_FILE).write_text("{not json")
    with pytest.raises(SystemExit, match=r"its run\.json cannot be read"):
        sft_comt.main(["--model", model_dir, "--out", str(out), *COMMON])
    bad = tmp_path / "rope"
    shutil.copytree(model_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps(dict(cfg, rope_scaling=dict(rope_type="llama3", factor=8.0))))
    with pytest.raises(SystemExit, match="rope_scaling of type 'llama3' needs a positive number"):
        check_checkpoint(str(bad), "--model")


@pytest.mark.cli
@pytest.mark.parametrize("ranks", [2, 1])
def test_a_stopped_sharded_run_suggests_a_resume_that_works(model_dir, tmp_path, ranks):
    """A sharded run needs torchrun to resume, even on one rank (--shard refuses a plain python)."""
    out = str(tmp_path / "o")
    launcher = [*torchrun()]
    launcher[launcher.index("--nproc_per_node") + 1] = str(ranks)
    res = run_sft(["--model", model_dir, "--out", out, *COMMON, "--shard", "--stop-at", "2"], launcher=launcher,
                  expect=1)
    assert f"continue with: torchrun --nproc_per_node {ranks} sft_comt.py --out {out} --resume" in res.stdout


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
