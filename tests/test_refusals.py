"""Bad flags, bad checkpoints and bad data are refused with one line (or skipped with a count), never
a library traceback or a silent run that trains nothing."""
import json
import os
import shutil

import pytest

import base
import ccrl
from comt.common import check_checkpoint, pick_device
import evaluate
import sft_comt
from comt.tasks import problems_for_cli


@pytest.mark.parametrize("parse, argv, words", [
    (sft_comt.parse_args, ["--steps", "0"], "argument --steps: 0 is out of range: must be at least 1"),
    (sft_comt.parse_args, ["--batch", "0"], "argument --batch: 0 is out of range"),
    (sft_comt.parse_args, ["--save-every", "0"], "argument --save-every: 0 is out of range"),
    (sft_comt.parse_args, ["--lr", "nan"], "argument --lr: nan is out of range: must be finite and above 0"),
    (sft_comt.parse_args, ["--replay", "1"], "argument --replay: 1 is out of range: must be finite and at least 0 and "
                                             "below 1"),
    (sft_comt.parse_args, ["--steps", "ten"], "argument --steps: 'ten' is not a whole number"),
    (ccrl.parse_args, ["--steps", "0"], "argument --steps: 0 is out of range"),
    (ccrl.parse_args, ["--group-size", "1"], "argument --group-size: 1 is out of range: must be at least 2"),
    (ccrl.parse_args, ["--ppo-epochs", "0"], "argument --ppo-epochs: 0 is out of range"),
    (ccrl.parse_args, ["--conf-weight", "nan"], "argument --conf-weight: nan is out of range"),
    (ccrl.parse_args, ["--temperature", "0"], "argument --temperature: 0 is out of range"),
    (ccrl.parse_args, ["--top-p", "1.5"], "argument --top-p: 1.5 is out of range"),
    (ccrl.parse_args, ["--kl-coef", "inf"], "argument --kl-coef: inf is out of range"),
    (ccrl.parse_args, ["--dtype", "fp8"], "argument --dtype: invalid choice: 'fp8'"),
    (evaluate.parse_args, ["--ckpt", "x", "--bins", "0"], "argument --bins: 0 is out of range"),
    (base.parse_args, ["--worked", "0.95"], "--worked 0.95, --plans 0.0 and --story 0.1 are shares of the corpus"),
    (base.parse_args, ["--init", "models/base"], "--init models/base is --out"),
    (base.parse_args, ["--dim", "100"], "--dim 100 must be a multiple of --heads 8"),
])
def test_flags_out_of_range_are_refused_in_one_line(parse, argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        parse(argv)
    assert e.value.code == 2
    assert words in capsys.readouterr().err.splitlines()[-1]


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


def test_empty_data_is_refused(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(SystemExit, match=r"empty\.jsonl: no problems in it"):
        problems_for_cli(str(empty), 10, None, 0)


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.cli
def test_over_long_examples_are_skipped_with_a_count_and_unmatched_targets_refused(model_dir, tmp_path, capsys):
    data = write_rows(tmp_path / "d.jsonl", [dict(id="a", question="What is 2 + 3?", answer="5"),
                                             dict(id="long", question="apples and pears " * 400, answer="1")])
    targets = write_rows(tmp_path / "t.jsonl", [dict(id=i, plan="Add the two numbers.", solution="x = 2 + 3 = 5")
                                                for i in ("a", "long", "other")])
    out = str(tmp_path / "o")
    sft_comt.main(["--model", model_dir, "--data", data, "--targets", targets, "--format", "cot", "--out", out,
                   "--steps", "1", "--batch", "1", "--eval-n", "0"])
    err = capsys.readouterr().err
    assert "1 of its 3 ids match no problem" in err and "skipped 1 of 2 training examples" in err
    with open(os.path.join(out, "log.jsonl")) as f:
        assert [json.loads(line) for line in f][-1]["examples"] == 1
    nowhere = write_rows(tmp_path / "n.jsonl", [dict(id="zzz", plan="Add them.")])
    with pytest.raises(SystemExit, match=r"none of its 1 ids is a problem of --data"):
        sft_comt.main(["--model", model_dir, "--data", data, "--targets", nowhere, "--out", str(tmp_path / "p")])
    assert not os.path.exists(tmp_path / "p")  # a refused run leaves nothing behind


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


def test_format_is_comt_or_cot_and_comt_by_default(capsys):
    with pytest.raises(SystemExit):
        sft_comt.parse_args(["--format", "plans"])
    assert "invalid choice: 'plans' (choose from" in capsys.readouterr().err
    assert sft_comt.parse_args([]).format == "comt" and sft_comt.parse_args([]).out == "runs/sft_comt"
    assert sft_comt.parse_args(["--format", "cot"]).out == "runs/sft_cot"
