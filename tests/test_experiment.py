"""experiment.py --quick: every arm trains, is evaluated and gets a row of numbers; --from-logs and --resume."""
import json
import os
import subprocess
import sys

import pytest

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
    assert set(ev) == set(DEFAULT_ARMS)
    for arm in DEFAULT_ARMS:
        assert set(ev[arm]) == {"test", "ood_template", "ood_steps", "ood_numbers", "ood_distractor"}
        assert all(0 <= a <= 1 for a in ev[arm]["test"]["acc"])
    costs = saved["aggregate"]["costs"]
    assert costs["cot_sft"]["sup_tokens"][0] > 0 and costs["comt_sft"]["sup_tokens"][0] > 0
    md = (out / "results.md").read_text()
    assert all(f"| {arm} |" in md for arm in DEFAULT_ARMS)
    assert (out / "results_accuracy.png").is_file() and (out / "results_reliability.png").is_file()

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
    assert with_parents(["comt_sft"]) == ["comt_sft"]
    assert with_parents(DEFAULT_ARMS) == DEFAULT_ARMS
    with pytest.raises(SystemExit, match="unknown ccrl"):
        with_parents(["ccrl"])


def test_paired_interval_against_the_exact_bootstrap_distribution():
    """Four problems, arm a right on the first only and b on none: a resample's difference is X/4 with
    X ~ Binomial(4, 1/4) (how often the first problem is drawn), so P(X >= 3) = 13/256 = 5.1% and
    P(X = 4) = 0.4%: the 2.5th and 97.5th percentiles are 0 and 3/4.
    Add a second seed in which the arms tie. Problems only (one resample for both seeds): the mean
    over seeds halves every resample, [0, 3/8]. Seeds too: both slots seed 1 (1/4: (X1 + X2)/8, a
    Binomial(8, 1/4) over 8), one slot each (1/2: X/8) or both seed 2 (1/4: 0), so P(>= 4/8) =
    1/4 * 0.1138 + 1/2 * 0.0039 = 3.0% and P(>= 5/8) = 1/4 * 0.0273 = 0.7%: [0, 1/2]."""
    from experiment import paired_interval
    ones = [[1, 1, 1, 1]]
    r = paired_interval([[1, 0, 0, 0]], ones, [[0, 0, 0, 0]], ones)
    assert (r["per_seed"], r["mean"], r["low"], r["high"]) == ([0.25], 0.25, 0.0, 0.75)
    two = ([[1, 0, 0, 0], [1, 1, 0, 0]], ones * 2, [[0, 0, 0, 0], [1, 1, 0, 0]], ones * 2)
    r = paired_interval(*two, seeds=False)
    assert (r["per_seed"], r["mean"], r["low"], r["high"]) == ([0.25, 0.0], 0.125, 0.0, 0.375)
    r = paired_interval(*two)
    assert (r["per_seed"], r["mean"], r["low"], r["high"]) == ([0.25, 0.0], 0.125, 0.0, 0.5)


def test_the_interval_counts_seeds_that_disagree():
    """Three seeds of 200 problems whose differences are +20, +5 and -10 points (as RL seeds can be):
    resampling the problems alone gives a narrow interval around +5 that excludes 0; resampling the
    seeds as well covers 0 and is several times wider."""
    from experiment import paired_interval, reading
    a = [[1] * k + [0] * (200 - k) for k in (100, 70, 40)]
    b = [[1] * k + [0] * (200 - k) for k in (60, 60, 60)]
    ones = [[1] * 200] * 3
    problems = paired_interval(a, ones, b, ones, seeds=False)
    both = paired_interval(a, ones, b, ones)
    assert problems["per_seed"] == both["per_seed"] == pytest.approx([0.2, 0.05, -0.1])
    assert reading(problems) == "higher" and reading(both) == "within noise"
    assert both["high"] - both["low"] > 2 * (problems["high"] - problems["low"])


def test_paired_interval_of_a_ratio_resamples_numerator_and_denominator_together():
    """Overconfident steps per step: problem 1 has 2 of its 4 steps overconfident (a) against 0 (b),
    problem 2 none of 1. Resamples: {1,1} 4/8 = 1/2, {1,2} and {2,1} 2/5, {2,2} 0, each 1/4 likely,
    so the 2.5th and 97.5th percentiles are 0 and 1/2 (a ratio of sums, not a mean of ratios)."""
    from experiment import paired_interval
    r = paired_interval([[2, 0]], [[4, 1]], [[0, 0]], [[4, 1]], n_boot=20_000)
    assert r["mean"] == pytest.approx(0.4) and (r["low"], r["high"]) == (0.0, 0.5)


def test_a_claim_reads_within_noise_where_its_interval_covers_zero():
    from experiment import reading
    assert reading(dict(low=-0.01, high=0.05)) == "within noise"
    assert reading(dict(low=0.01, high=0.05)) == "higher" and reading(dict(low=-0.05, high=-0.01)) == "lower"


def test_the_reading_is_generated_from_the_results():
    """A hand-made results file: a difference whose interval covers 0 reads "within noise", one that
    excludes it "higher"; each arm's plans on an OOD split are set against the base's own-plan figure."""
    from experiment import reading_lines
    claim = lambda split, mean, low, high: dict(claim="CoMT-SFT minus CoT-SFT, accuracy", split=split, metric="acc",
                                                expected="higher", per_seed=[mean], mean=mean, low=low, high=high)
    found = [claim("test", 0.02, -0.03, 0.07), claim("ood_steps", 0.10, 0.04, 0.16)]
    arm = lambda plans, acc: {s: dict(plan_correct=[plans, plans], acc=[acc, acc]) for s in ("test", "ood_steps")}
    ev = dict(cot_sft=arm(0.2, 0.1), comt_sft=arm(0.4, 0.3))
    base = dict(base_own={"test": dict(plan_correct=0.9), "ood_steps": dict(plan_correct=0.8)},
                base_plan={"test": dict(acc=0.95), "ood_steps": dict(acc=0.7)})
    text = "\n".join(reading_lines(ev, base, found, ["test", "ood_steps"]))
    assert "**CoMT-SFT minus CoT-SFT, accuracy** (the paper: higher): `test` +2.0 [-3.0, +7.0], within noise" in text
    assert "out of distribution higher on 1 of 1 splits (`ood_steps` +10.0 [+4.0, +16.0])" in text
    assert "| base | 80 / 70 |" in text and "| cot_sft | 20 (25% kept) / 10 |" in text
    assert "| comt_sft | 40 (50% kept) / 30 |" in text
    assert "`ood_steps`: the base plans 80% right in its own words; the arms plan 20-40% right (most comt_sft, least " \
           "cot_sft): every arm lost part of the base's planning." in text
