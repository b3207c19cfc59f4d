"""
Which arms experiment.py compares (COMPARISONS, read in the metrics of CLAIM_METRICS by `claims`),
and how sure each comparison is: both arms answered the same problems in the
same S seeds, so each difference is paired, and its interval comes from a hierarchical bootstrap:
the seeds drawn with replacement, then the problems within each drawn seed. A metric is either a
ratio of per-problem sums (accuracy = right / problems, overconfident step errors = such steps /
steps, the confidence of wrong steps = their summed confidence / wrong steps) or the step AUROC (how
well a step's confidence tells right steps from wrong ones), whose resamples weight each step by how
often its problem was drawn. The pooled out-of-distribution split joins the OOD splits' problems, as
one average over benchmarks does.
"""
import numpy as np
from tqdm import tqdm

POOLED = "ood_pooled"  # the OOD splits' problems together (a split name in the results)


def is_ood(split: str) -> bool:
    return split.startswith("ood_") and split != POOLED


# -----------------------------------------------------------------------------
# Per-problem numerators and denominators of each metric (from evaluate.py's per_problem lists)


def wrong_steps(pp: dict) -> list[int]:
    return [len(r) - sum(r) for r in pp["step_rights"]]


def wrong_step_conf(pp: dict) -> list[float]:
    return [sum(c for c, z in zip(cs, zs) if not z) for cs, zs in zip(pp["step_confs"], pp["step_rights"])]


RATIOS = {  # metric: (numerator, denominator) per problem; the metric is sum(numerator) / sum(denominator)
    "acc": lambda pp: (pp["ok"], [1] * len(pp["ok"])),
    "overconf_err": lambda pp: (pp["overconf"], pp["steps"]),
    "step_err": lambda pp: (wrong_steps(pp), pp["steps"]),
    "wrong_conf": lambda pp: (wrong_step_conf(pp), wrong_steps(pp)),
}
METRICS = (*RATIOS, "step_auroc")


# -----------------------------------------------------------------------------
# The bootstrap


def resample(S: int, N: int, n_boot: int, seed: int, seeds: bool) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols): which seed fills each of the S slots of a resample, (B,S,1), and which of its N
    problems, (B,S,N). seeds=False keeps every seed once and draws one problem resample for all."""
    rng = np.random.default_rng(seed)
    if seeds:
        return rng.integers(0, S, size=(n_boot, S, 1)), rng.integers(0, N, size=(n_boot, S, N))
    return (np.arange(S)[None, :, None],
            np.broadcast_to(rng.integers(0, N, size=(n_boot, 1, N)), (n_boot, S, N)))


def summary(per_seed: np.ndarray, boot: np.ndarray) -> dict:
    """The per-seed differences, their mean and the 2.5th and 97.5th percentiles of the resampled means."""
    low, high = np.nanpercentile(boot, [2.5, 97.5]) if np.isfinite(boot).any() else (float("nan"),) * 2
    return dict(per_seed=[float(x) for x in per_seed], mean=float(per_seed.mean()), low=float(low), high=float(high))


def paired_interval(a_num, a_den, b_num, b_den, n_boot: int = 10_000, seed: int = 0, seeds: bool = True) -> dict:
    """Arms a and b on the same problems in S seeds: (S,N) arrays of each problem's numerator and
    denominator (a metric is sum(num) / sum(den) over a seed's problems). Returns the per-seed
    differences a - b, their mean, and the 2.5th and 97.5th percentiles of that mean over n_boot
    hierarchical resamples: S seeds drawn with replacement, then within each drawn seed N problems
    drawn with replacement (the same problems for both arms: every seed and arm answered the same
    problems, so a pair stays a pair). Seed-to-seed variation is the larger part of an RL result's
    uncertainty, so with few seeds the interval is wide. seeds=False resamples the problems only (the
    same resample in every seed): what these S runs say, not what the method does.

    >>> r = paired_interval([[1, 0, 0, 0]], [[1, 1, 1, 1]], [[0, 0, 0, 0]], [[1, 1, 1, 1]])
    >>> r["per_seed"], r["mean"], r["low"], r["high"]  # a resample's mean is X/4, X ~ Binomial(4, 1/4)
    ([0.25], 0.25, 0.0, 0.75)
    """
    a_num, a_den, b_num, b_den = (np.asarray(x, dtype=float) for x in (a_num, a_den, b_num, b_den))
    rows, cols = resample(*a_num.shape, n_boot, seed, seeds)
    ratio = lambda num, den: num.sum(-1) / den.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample (or a seed) with no steps: nan
        per_seed = ratio(a_num, a_den) - ratio(b_num, b_den)  # (S,)
        pick = lambda x: x[rows, cols]  # (B,S,N)
        boot = (ratio(pick(a_num), pick(a_den)) - ratio(pick(b_num), pick(b_den))).mean(-1)  # (B,)
    return summary(per_seed, boot)


def weighted_auroc(conf, right, weights) -> np.ndarray:
    """Step AUROC under K weightings of the steps: the probability that a right step has a higher
    confidence than a wrong one, ties counting one half, each step counted `weights` times. conf and
    right (M,), weights (K,M); returns (K,), nan where a weighting leaves no right or no wrong step.

    >>> weighted_auroc([0.9, 0.5, 0.5, 0.2], [1, 1, 0, 0], [[1, 1, 1, 1], [1, 0, 1, 1], [0, 1, 1, 0]])
    array([0.875, 1.   , 0.5  ])
    """
    conf, right = np.asarray(conf, dtype=float), np.asarray(right, dtype=float)
    order = np.argsort(conf, kind="stable")
    c, z, w = conf[order], right[order], np.asarray(weights, dtype=float)[:, order]
    start, end = np.searchsorted(c, c, side="left"), np.searchsorted(c, c, side="right")  # each step's tie group
    wrong = np.concatenate([np.zeros((len(w), 1)), np.cumsum(w * (1 - z), 1)], 1)  # (K,M+1): wrong weight below i
    below, tied = wrong[:, start], wrong[:, end] - wrong[:, start]
    num = (w * z * (below + 0.5 * tied)).sum(1)
    den = (w * z).sum(1) * (w * (1 - z)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def steps_of(pp: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seed's steps: (confidence, right, the problem each belongs to), each (M,)."""
    conf = [c for cs in pp["step_confs"] for c in cs]
    right = [z for zs in pp["step_rights"] for z in zs]
    problem = [i for i, zs in enumerate(pp["step_rights"]) for _ in zs]
    return np.asarray(conf, dtype=float), np.asarray(right, dtype=float), np.asarray(problem, dtype=int)


def paired_auroc(a: list[dict], b: list[dict], n_boot: int = 10_000, seed: int = 0, chunk: int = 2_000) -> dict:
    """paired_interval's figures for the step AUROC of arms a and b (their per_problem dicts, one per
    seed, over the same N problems): a resample weights each step by how often its problem was drawn."""
    S, N = len(a), len(a[0]["ok"])
    rows, cols = resample(S, N, n_boot, seed, True)
    counts = np.bincount((np.arange(n_boot * S)[:, None] * N + cols.reshape(n_boot * S, N)).ravel(),
                         minlength=n_boot * S * N).reshape(n_boot, S, N)  # (B,S,N): draws of each problem
    boot = np.zeros((n_boot, S))
    per_seed = np.zeros(S)
    for arm, sign in ((a, 1.0), (b, -1.0)):
        for r in range(S):
            conf, right, problem = steps_of(arm[r])
            per_seed[r] += sign * weighted_auroc(conf, right, np.ones((1, len(conf))))[0]
            slots = np.argwhere(rows[:, :, 0] == r)  # (K,2): the (resample, slot) pairs seed r fills
            for i in range(0, len(slots), chunk):
                bs = slots[i:i + chunk]
                w = counts[bs[:, 0], bs[:, 1]][:, problem]  # (k,M)
                boot[bs[:, 0], bs[:, 1]] += sign * weighted_auroc(conf, right, w)
    return summary(per_seed, boot.mean(-1))


def compare(runs: list[dict], a: str, b: str, split: str, metric: str, n_boot: int = 10_000) -> dict:
    """The paired difference a - b of `metric` on `split` over the seeds' evaluations (runs[k]["eval"]
    [arm][split]["per_problem"]), with its interval."""
    pa = [run["eval"][a][split]["per_problem"] for run in runs]
    pb = [run["eval"][b][split]["per_problem"] for run in runs]
    if metric == "step_auroc":
        return paired_auroc(pa, pb, n_boot)
    ratios = lambda pps: tuple(map(list, zip(*(RATIOS[metric](pp) for pp in pps))))
    return paired_interval(*ratios(pa), *ratios(pb), n_boot=n_boot)


def reading(c: dict) -> str:
    """'within noise' where the interval covers 0, else the sign that holds."""
    if c["low"] != c["low"]:
        return "–"
    if c["low"] <= 0 <= c["high"]:
        return "within noise"
    return "higher" if c["low"] > 0 else "lower"


# -----------------------------------------------------------------------------
# The pooled out-of-distribution split


def pool_ood(per_split: dict) -> dict:
    """per_split ({split: metrics}) with POOLED added when it holds OOD splits: each scalar metric the
    mean over those splits (accuracy: the mean of the splits' accuracies, as an average over benchmarks
    is), the per-problem lists joined (the splits have the same number of problems, so a resample of
    the joined problems estimates that mean)."""
    ood = [m for s, m in per_split.items() if is_ood(s)]
    if not ood:
        return per_split
    pooled = {}
    for k, v in ood[0].items():
        if k == "per_problem":
            pooled[k] = {key: [x for m in ood for x in m[k][key]] for key in v}
        elif v is None or isinstance(v, (int, float)) and not isinstance(v, bool):  # (None: nothing measured)
            xs = [m[k] for m in ood if isinstance(m.get(k), (int, float)) and m[k] == m[k]]
            pooled[k] = sum(xs) / len(xs) if xs else float("nan")
    return {**per_split, POOLED: pooled}


# -----------------------------------------------------------------------------
# The claims: which arms are compared, in which metrics and splits

COMPARISONS = (  # (key, the comparison, arm, the arm it is compared with): the paper's pipeline against its
    # baseline; the reward's effect from the same init; the SFT target's under the same reward; each RL stage's gain
    ("pipeline", "CoMT-SFT + CCRL minus CoT-SFT + GRPO", "comt_ccrl", "cot_grpo"),
    ("reward_comt", "CCRL minus GRPO, both from CoMT-SFT", "comt_ccrl", "comt_grpo"),
    ("reward_cot", "CCRL minus GRPO, both from CoT-SFT", "cot_ccrl", "cot_grpo"),
    ("target_ccrl", "CoMT-SFT minus CoT-SFT, both then CCRL", "comt_ccrl", "cot_ccrl"),
    ("target_grpo", "CoMT-SFT minus CoT-SFT, both then GRPO", "comt_grpo", "cot_grpo"),
    ("target_sft", "CoMT-SFT minus CoT-SFT, stage 1 alone", "comt_sft", "cot_sft"),
    ("ccrl_gain", "CCRL minus its init (CoMT-SFT)", "comt_ccrl", "comt_sft"),
    ("grpo_gain", "GRPO minus its init (CoT-SFT)", "cot_grpo", "cot_sft"),
)
CALIBRATION = ("pipeline", "reward_comt", "reward_cot", "ccrl_gain")  # where the reward's calibration is read
CLAIM_METRICS = {  # metric: (its name, the direction the paper reports, the comparisons read on it, every split?)
    "acc": ("accuracy", "higher", None, True),
    "overconf_err": ("overconfident step errors", "lower", CALIBRATION, True),
    "step_err": ("step errors", "lower", CALIBRATION, False),  # (else `test` and the pooled OOD split)
    "wrong_conf": ("confidence of wrong steps", "lower", CALIBRATION, False),
    "step_auroc": ("step AUROC", "higher", CALIBRATION, False),
}


def claims(per_seed: list[dict], splits: list[str]) -> list[dict]:
    """Every comparison whose arms ran, in every metric and split it is read on, with its interval."""
    arms, todo = set(per_seed[0]["eval"]), []
    for metric, (name, expected, keys, everywhere) in CLAIM_METRICS.items():
        for key, what, a, b in COMPARISONS:
            if {a, b} <= arms and (keys is None or key in keys):
                todo += [(metric, name, expected, key, what, a, b, s) for s in splits
                         if everywhere or s in ("test", POOLED)]
    return [dict(claim=f"{what}, {name}", key=key, split=s, metric=metric, expected=expected,
                 **compare(per_seed, a, b, s, metric))
            for metric, name, expected, key, what, a, b, s in tqdm(todo, desc="intervals", leave=False)]
