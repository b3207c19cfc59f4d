"""comt/common.py: devices, checkpoint directories, training states, files written by replacing, strict JSON."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import ccrl
import sft_comt
from comt import checkpoint
from comt.common import check_checkpoint, pick_device
from conftest import RL, ROOT, SFT


@pytest.mark.parametrize("script", ["experiment.py", "teacher.py"])
def test_unwritable_outputs_are_found_before_the_work(script, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    flags = (["--results", str(blocker / "r")] if script == "experiment.py"
             else ["--out", str(blocker / "t.jsonl"), "--data", "gsm8k:train"])
    res = subprocess.run([sys.executable, script, *flags], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and ("cannot write" in res.stderr or "cannot create" in res.stderr), res.stderr


@pytest.mark.parametrize("name, words", [("foo", "not a device"), ("cuda:0", "no CUDA GPU"),
                                         ("meta", "only cpu and cuda")])
def test_bad_devices_are_refused(name, words):
    import torch
    if torch.cuda.is_available() and name == "cuda:0":
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit, match=words):
        pick_device(name)


def test_corrupted_checkpoints_are_named_with_the_file(model_dir, tmp_path):
    cfg, trunc = tmp_path / "cfg", tmp_path / "trunc"
    shutil.copytree(model_dir, cfg)
    (cfg / "config.json").write_text('{"model_type": "llama", "hidden_size": ')
    with pytest.raises(SystemExit, match=r"--init .*cfg: cannot read config\.json \(JSONDecodeError"):
        check_checkpoint(str(cfg), "--init")
    shutil.copytree(model_dir, trunc)
    weights = trunc / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    with pytest.raises(SystemExit, match=r"--model .*trunc: cannot read model\.safetensors \(SafetensorError"):
        check_checkpoint(str(trunc), "--model")
    (cfg / "config.json").write_text(json.dumps(dict(model_type="gpt2")))
    with pytest.raises(SystemExit, match=r"cannot read config\.json \(UnsupportedModelError: .*llama"):
        check_checkpoint(str(cfg), "--init")
    with pytest.raises(SystemExit, match="not a checkpoint directory"):
        check_checkpoint(str(tmp_path / "none"), "--init")


class Planted:
    """Unpickling this opens (creates) a file: stands for any code a crafted pickle could run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_crafted_training_state_runs_no_code(model_dir, tmp_path):
    out, marker = tmp_path / "o", tmp_path / "ran"
    out.mkdir()
    (out / checkpoint.RUN_FILE).write_text(json.dumps(dict(script="sft_comt.py")))  # a run of this script, so it is read
    torch.save(dict(step=1, args=dict(steps=4), planted=Planted(str(marker))), out / checkpoint.STATE_FILE)
    with pytest.raises(SystemExit, match="not a readable training state"):
        sft_comt.main(["--model", model_dir, "--out", str(out), *SFT])
    assert not marker.exists()


def test_json_written_is_strict_and_gold_answers_are_exact(model_dir, tmp_path):
    from comt.benchmarks import read_jsonl
    out = str(tmp_path / "o")
    ccrl.main(["--init", model_dir, "--out", out, *RL])  # a random model: nothing to measure for some metrics
    lines = open(os.path.join(out, "log.jsonl")).read().splitlines()
    assert [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in {line}")) for line in lines]
    assert "null" in "".join(lines)
    path = tmp_path / "big.jsonl"
    path.write_text('{"question": "q", "answer": 123456789012345678.0}\n{"question": "q", "answer": 0.1}\n')
    assert [p.answer for p in read_jsonl(str(path))] == ["123456789012345678", "0.1"]


def test_json_files_hold_plain_lists_on_one_line_and_read_back_the_same(tmp_path):
    from comt.common import write_json
    obj = dict(n=[1, 2.5, None, True], s=["a  b", "c\nd [e]"], nested=[[1, 2], [3]], o=[{"a": [4]}], e=[],
               bad=float("nan"))
    path = str(tmp_path / "x.json")
    write_json(obj, path)
    text = open(path).read()
    assert json.loads(text) == {**obj, "bad": None}
    assert '"n": [1, 2.5, null, true]' in text and "[1, 2]" in text and '"a": [4]' in text
    assert '"a  b"' in text  # a string's own spaces are kept


def test_a_training_state_is_checked_to_be_the_record_a_run_saves():
    from comt.common import state_problem
    assert state_problem(dict(step=2, args=dict(steps=4), totals={})) is None
    assert state_problem([1]) == "a list, not a dict"
    assert state_problem(dict(step=2, totals={})) == "'args' is missing, not a dict"
    assert state_problem(dict(step=True, args=dict(steps=4), totals={})) == "'step' is a bool, not a whole number"
    assert state_problem(dict(step=2, args=dict(steps=-1), totals={})) == "'args.steps' is a int, not a whole number"


def test_replacing_writes_whole_files_and_never_through_a_link(tmp_path):
    from comt.common import replacing
    target, link = tmp_path / "mine.txt", tmp_path / "out.txt"
    target.write_text("mine")
    link.symlink_to(target)
    with replacing(str(link)) as f:
        f.write("new")
    assert target.read_text() == "mine" and not link.is_symlink() and link.read_text() == "new"
    with pytest.raises(RuntimeError), replacing(str(tmp_path / "half.txt")) as f:
        f.write("half")
        raise RuntimeError
    assert os.listdir(tmp_path) == sorted(os.listdir(tmp_path)) and not (tmp_path / "half.txt").exists()
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_a_checkpoint_id_changes_when_its_weights_are_rewritten(model_dir, tmp_path):
    from comt.common import checkpoint_id
    ck = tmp_path / "ck"
    shutil.copytree(model_dir, ck)
    before = checkpoint_id(str(ck))
    assert checkpoint_id(str(ck)) == before
    os.utime(ck / "model.safetensors", ns=(1, 1))
    assert checkpoint_id(str(ck)) != before
