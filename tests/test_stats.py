"""comt/stats.py: the paired differences and their hierarchical bootstrap intervals, by hand."""
import numpy as np
import pytest

from comt.stats import POOLED, compare, paired_auroc, paired_interval, pool_ood, reading, weighted_auroc


def test_paired_interval_against_the_exact_bootstrap_distribution():
    """Four problems, arm a right on the first only and b on none: a resample's difference is X/4 with
    X ~ Binomial(4, 1/4) (how often the first problem is drawn), so P(X >= 3) = 13/256 = 5.1% and
    P(X = 4) = 0.4%: the 2.5th and 97.5th percentiles are 0 and 3/4.
    Add a second seed in which the arms tie. Problems only (one resample for both seeds): the mean
    over seeds halves every resample, [0, 3/8]. Seeds too: both slots seed 1 (1/4: (X1 + X2)/8, a
    Binomial(8, 1/4) over 8), one slot each (1/2: X/8) or both seed 2 (1/4: 0), so P(>= 4/8) =
    1/4 * 0.1138 + 1/2 * 0.0039 = 3.0% and P(>= 5/8) = 1/4 * 0.0273 = 0.7%: [0, 1/2]."""
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
    r = paired_interval([[2, 0]], [[4, 1]], [[0, 0]], [[4, 1]], n_boot=20_000)
    assert r["mean"] == pytest.approx(0.4) and (r["low"], r["high"]) == (0.0, 0.5)


def test_a_claim_reads_within_noise_where_its_interval_covers_zero():
    assert reading(dict(low=-0.01, high=0.05)) == "within noise"
    assert reading(dict(low=0.01, high=0.05)) == "higher" and reading(dict(low=-0.05, high=-0.01)) == "lower"


def test_weighted_auroc_counts_a_step_as_often_as_its_weight():
    """Against evaluate.auroc (the Mann-Whitney count over pairs, ties one half) on the steps repeated
    as often as their weights say."""
    from evaluate import auroc
    rng = np.random.default_rng(1)
    for _ in range(30):
        m = int(rng.integers(2, 30))
        conf, right, w = np.round(rng.random(m), 1), rng.integers(0, 2, m), rng.integers(0, 3, m)
        got = weighted_auroc(conf, right, w[None])[0]
        want = auroc(list(np.repeat(conf, w)), list(np.repeat(right, w).astype(bool)))
        assert (np.isnan(got) and np.isnan(want)) or got == pytest.approx(want)


def steps(confs, rights):
    return dict(ok=[int(all(r)) for r in rights], step_confs=confs, step_rights=rights,
                steps=[len(r) for r in rights], overconf=[sum(c > 0.9 and not z for c, z in zip(cs, zs))
                                                           for cs, zs in zip(confs, rights)])


def test_step_auroc_interval_by_hand():
    """One seed, two problems. a: problem 1 has a right step at 0.9 and a wrong one at 0.5, problem 2
    a right step at 0.8: every right step above the wrong one, AUROC 1. b: the same confidences on the
    other steps (right 0.5, wrong 0.9; right 0.8): AUROC 0. A resample draws {1,1}, {1,2} (difference
    1) or {2,2} (no wrong step: no AUROC, left out), so the interval is [1, 1]."""
    a = [steps([[0.9, 0.5], [0.8]], [[1, 0], [1]])]
    b = [steps([[0.5, 0.9], [0.8]], [[1, 0], [1]])]
    r = paired_auroc(a, b, n_boot=2_000)
    assert (r["per_seed"], r["mean"], r["low"], r["high"]) == ([1.0], 1.0, 1.0, 1.0)


def test_confidence_of_wrong_steps_and_step_errors_are_ratios_of_sums():
    """a's wrong steps: 0.9 and 0.6 in problem 1, 0.3 in problem 2, mean 0.6; b's: one, at 0.2. Step
    errors: a 3 of 4 steps, b 1 of 4."""
    a = [steps([[0.9, 0.6, 0.95], [0.3]], [[0, 0, 1], [0]])]
    b = [steps([[0.2, 0.99, 0.99], [0.99]], [[0, 1, 1], [1]])]
    runs = [dict(eval=dict(a={"test": dict(per_problem=a[0])}, b={"test": dict(per_problem=b[0])}))]
    assert compare(runs, "a", "b", "test", "wrong_conf", n_boot=100)["mean"] == pytest.approx(0.6 - 0.2)
    assert compare(runs, "a", "b", "test", "step_err", n_boot=100)["mean"] == pytest.approx(3 / 4 - 1 / 4)


def test_the_pooled_ood_split_averages_the_splits_and_resamples_their_problems_together():
    """A hand-made results file: arm a answers both problems of ood_x and none of ood_y, b none. Pooled:
    accuracy 0.5 (the mean of 1.0 and 0.0), and a resample of the 4 joined problems is X/4 with X ~
    Binomial(4, 1/2) (the draws of ood_x's problems): P(X = 0) = P(X = 4) = 6.25%, so [0, 1]; the
    per-split rows stay."""
    problems = lambda ok: dict(acc=sum(ok) / len(ok), per_problem=steps([[0.99]] * len(ok), [[z] for z in ok]))
    run = dict(eval=dict(a=pool_ood({"test": problems([1, 0]), "ood_x": problems([1, 1]), "ood_y": problems([0, 0])}),
                         b=pool_ood({"test": problems([0, 0]), "ood_x": problems([0, 0]), "ood_y": problems([0, 0])})))
    a = run["eval"]["a"]
    assert list(a) == ["test", "ood_x", "ood_y", POOLED] and a[POOLED]["acc"] == 0.5
    assert a[POOLED]["per_problem"]["ok"] == [1, 1, 0, 0]
    r = compare([run], "a", "b", POOLED, "acc")
    assert (r["per_seed"], r["mean"], r["low"], r["high"]) == ([0.5], 0.5, 0.0, 1.0)
    assert reading(r) == "within noise"
