"""comt/flags.py: flag values checked at parse time, and settings records whose fields are their flags."""
import pytest

import base
import ccrl
import evaluate
import sft_comt


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


def test_a_record_is_its_flags_and_a_saved_dict_builds_it():
    """A settings record's fields are its flags (name, default, help) and from_flags rebuilds it from a
    parsed namespace or a checkpoint's saved arguments; a flag the dict lacks takes its default."""
    import argparse

    from comt.flags import add_flags, from_flags
    from rewards import RewardSettings
    ap = argparse.ArgumentParser()
    add_flags(ap, RewardSettings, "reward", conf_weight=1.0)
    args = ap.parse_args(["--conf-form", "brier"])
    assert from_flags(RewardSettings, args) == RewardSettings(conf_weight=1.0, conf_form="brier")
    assert from_flags(RewardSettings, dict(reward="outcome")) == RewardSettings(reward="outcome")
    assert "lambda, the weight of the confidence term" in ap.format_help()
    with pytest.raises(SystemExit):
        ap.parse_args(["--conf-agg", "mean"])  # choices come from the field


def test_each_stage_step_reads_records_never_the_namespace():
    """rl_step and sft_step read their settings from records: no attribute of `args` in them."""
    import ast
    import inspect
    for fn in (ccrl.rl_step, sft_comt.sft_step):
        tree = ast.parse(inspect.getsource(fn))
        reads = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                 and n.value.id == "args" or isinstance(n, ast.Attribute) and n.attr == "args"]
        assert not reads, f"{fn.__name__} reads args"
