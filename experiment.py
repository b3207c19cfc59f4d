"""
The side-by-side experiment on the embedded default: four arms from one base model, same data,
same budgets, several seeds, then one evaluation of everything.

    python experiment.py                  # 3 seeds -> results/default.md, results/default.json (+ PNGs)
    python experiment.py --update-readme  # the same, and the README's results tables replaced by them
    python experiment.py --quick          # tiny budgets, one seed, in runs/exp_quick (a smoke test; CI)
    python experiment.py --resume         # continue an interrupted run: stages finished by the same command are kept
    python experiment.py --seeds 0 1 --rl-steps 50 --out runs/exp2 --results results/exp2
    python experiment.py --seeds 0 --arms cot_grpo comt_ccrl comt_grpo cot_ccrl --results results/arms2x2

Arms (the SFT arms start from --base, the shipped models/base by default):
    cot_sft     sft_comt.py --format cot              (the paper's baseline SFT)
    comt_sft    sft_comt.py --format comt             (CoMT)
    cot_grpo    ccrl.py --reward outcome from cot_sft  (baseline RL)
    comt_ccrl   ccrl.py --reward ccrl from comt_sft   (CoMT + CCRL)
    comt_grpo   ccrl.py --reward outcome from comt_sft (with cot_ccrl: the rest of the 2x2, --arms)
    cot_ccrl    ccrl.py --reward ccrl from cot_sft
Per seed, the seed sets the SFT data order and the RL prompts and samples; the base, the evaluation
problems and the budgets are the same for every arm and seed. Each stage runs as its own process
(exactly the README commands, plus --eval-n 0: evaluate.py measures every arm afterwards, and
budget flags when given); its final JSON summary line is kept, and its wall time is appended to
its log, so --resume and --from-logs rebuild every number from the logs. The base model itself is
evaluated once (greedy, so the same in every seed), from the gold plan (`evaluate.py --gold-plan`:
the ceiling of what its execution allows) and from the question alone (the floor).

Outputs: runs under --out/seed<k>/<arm>, evaluate.py's JSON per seed, and --results .md / .json:
mean +- std over seeds per arm x split with the base's two rows, paired differences between arms
(the paper's claims: CoMT+CCRL against CoT+GRPO, CoMT-SFT against CoT-SFT, each RL stage against
its init; accuracy per split, and overconfident step errors) per seed with a 95% bootstrap interval
over problems (paired_interval), plan correct / plan followed and the three kinds of wrong answer,
calibration, supervised tokens and wall time per stage; <results>_accuracy.png (mean +- std over
seeds, the base's ceiling and floor marked) and the first seed's reliability diagrams. The .md
holds every table; --update-readme puts the main ones into the README.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from comt.common import COUNT, SEED, unwritable, write_json
from comt.lifecycle import STOPPED, lock_out

ARMS = {  # arm: (script, its flags, the arm it starts from); the first four are the paper's comparison
    "cot_sft": ("sft_comt.py", ["--format", "cot"], None),
    "comt_sft": ("sft_comt.py", ["--format", "comt"], None),
    "cot_grpo": ("ccrl.py", ["--reward", "outcome"], "cot_sft"),
    "comt_ccrl": ("ccrl.py", ["--reward", "ccrl"], "comt_sft"),
    "comt_grpo": ("ccrl.py", ["--reward", "outcome"], "comt_sft"),  # the rest of the 2x2 of SFT format x reward
    "cot_ccrl": ("ccrl.py", ["--reward", "ccrl"], "cot_sft"),
}
DEFAULT_ARMS = ["cot_sft", "comt_sft", "cot_grpo", "comt_ccrl"]
DEFAULT_BASE, EVAL_N = "models/base", 200
QUICK = dict(base=["--tokenizer-docs", "1500", "--vocab", "400", "--steps", "20", "--eval-n", "4", "--dim", "64",
                   "--layers", "2", "--heads", "2", "--kv-heads", "1", "--batch", "4"],
             sft=["--steps", "4", "--n-train", "64", "--eval-n", "4", "--eval-max-new", "16"],
             rl=["--steps", "2", "--group-size", "2", "--prompts-per-step", "2", "--n-train", "64",
                 "--max-new-tokens", "24", "--eval-n", "4", "--eval-every", "2"],
             eval=["--n", "4", "--max-new-tokens", "24"])


def with_parents(arms: list[str]) -> list[str]:
    """The arms asked for plus the SFT arms they start from, in ARMS order."""
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise SystemExit(f"--arms: unknown {', '.join(sorted(unknown))}; choose from {', '.join(ARMS)}")
    wanted = set(arms) | {ARMS[a][2] for a in arms if ARMS[a][2]}
    return [a for a in ARMS if a in wanted]


def read_build(base: str) -> dict:
    """The base model's build summary (base.py writes build.json), {} when it has none."""
    path = os.path.join(base, "build.json")
    return json.load(open(path)) if os.path.isfile(path) else {}


def stage_record(log_path: str) -> dict | None:
    """The final JSON summary line a stage printed to its log, with the wall time and the command
    run_stage appended after it; None when the stage never finished (no log, or stopped or killed
    before its last line)."""
    if not os.path.isfile(log_path):
        return None
    summary, end = None, None
    with open(log_path) as f:
        for line in f:
            if line.startswith("{") and '"summary": true' in line:
                summary = json.loads(line)
            elif line.startswith('{"stage_wall_seconds"'):
                end = json.loads(line)
    if summary is None or end is None:
        return None
    return dict(summary, wall_seconds=end["stage_wall_seconds"], stage_command=end.get("command"),
                stage_code=end.get("code"))


def run_stage(cmd: list[str], log_path: str) -> dict:
    """Run one stage with its output in log_path, append its wall time and command there; return its
    record. A stage that fails or is stopped ends the experiment (--resume reruns it)."""
    t0 = time.time()
    print("$ " + " ".join(cmd), flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, *cmd], stdout=log, stderr=subprocess.STDOUT, text=True)
        if proc.wait():
            how = "was stopped before its end" if proc.returncode == STOPPED else "failed"
            raise SystemExit(f"stage {how} (exit {proc.returncode}): {' '.join(cmd)}; see {log_path}; "
                             f"`python experiment.py --resume` (with the same flags) runs it again")
        log.write(json.dumps(dict(stage_wall_seconds=round(time.time() - t0, 1), command=cmd, code=code_version()))
                  + "\n")
    return stage_record(log_path)


def code_version() -> str:
    """A short hash of the project's scripts and modules (comt/ included): which code made a stage."""
    import glob
    import hashlib
    root, h = os.path.dirname(os.path.abspath(__file__)), hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(root, "*.py")) + glob.glob(os.path.join(root, "comt", "*.py"))):
        with open(path, "rb") as f:
            h.update(os.path.relpath(path, root).encode() + f.read())
    return h.hexdigest()[:12]


def finished_or_run(cmd: list[str], log_path: str, ckpt: str | None, keep: bool) -> tuple[dict, bool]:
    """(the stage's record, whether it ran now). With keep (--resume), a stage whose log is complete,
    was run by this same command and whose checkpoint (if any) is on disk is not run again; anything
    else runs from scratch."""
    record = stage_record(log_path) if keep else None
    if record is not None and record["stage_command"] != cmd:
        print(f"rerun: {log_path} was made by another command ({' '.join(record['stage_command'] or ['?'])})",
              flush=True)
        record = None
    if record is not None and (ckpt is None or os.path.isfile(os.path.join(ckpt, "config.json"))):
        older = "" if record["stage_code"] == code_version() else (
            f"; made by other code ({record['stage_code'] or 'unrecorded'}, now {code_version()}): a rerun may give "
            f"other numbers, delete its log to rerun it")
        print(f"kept: {log_path} ({record['wall_seconds']} s){older}", flush=True)
        return record, False
    if ckpt is not None:
        shutil.rmtree(ckpt, ignore_errors=True)  # a rerun starts the arm afresh
    return run_stage(cmd, log_path), True


BASE_ROWS = {  # evaluate.py runs of the base model: the key (its JSON in --out), the row label, the flags
    "base_plan": ("base, from the gold plan", ["--gold-plan"]),
    "base_own": ("base, its own plans (plan correct)", ["--own-plan", "steps"]),
    "base_plain": ("base, question only", []),
}
BASE_METRIC = {"base_own": "plan_correct"}  # what the own-plan row shows in the accuracy tables (it writes no answer)


def eval_flags(args) -> list[str]:
    return QUICK["eval"] if args.quick else ["--n", str(args.eval_n)]


def base_rows(args, keep: bool) -> tuple[dict, float]:
    """The base model evaluated from the gold plan, in its own plan form and from the question alone,
    once (greedy, so the same for every seed): ({row: {split: metrics}}, the seconds it took)."""
    rows, seconds = {}, 0.0
    for key, (_, flags) in BASE_ROWS.items():
        path = os.path.join(args.out, f"{key}.json")
        cmd = ["evaluate.py", "--ckpt", args.base, *flags, "--json", path, "--no-plots", *eval_flags(args)]
        record, _ = finished_or_run(cmd, os.path.join(args.out, f"{key}.log"), None, keep)
        with open(path) as f:
            rows[key] = next(iter(json.load(f)["results"].values()))
        seconds += record["wall_seconds"]
    return rows, seconds


def runs_from_logs(args) -> list[dict]:
    """The per-seed records of a finished run, from its logs and eval.json files."""
    per_seed = []
    for seed in args.seeds:
        root = os.path.join(args.out, f"seed{seed}")
        stages = {}
        for arm in [*args.arms, "eval"]:
            log = os.path.join(root, f"{arm}.log")
            stages[arm] = stage_record(log)
            if stages[arm] is None:
                raise SystemExit(f"--from-logs: {log} is missing or unfinished (run the experiment, or --resume it)")
            if arm != "eval" and stages[arm]["stage_command"] != stage_command(args, seed, arm):
                raise SystemExit(f"--from-logs: {log} was made by `{' '.join(stages[arm]['stage_command'] or ['?'])}`, "
                                 f"not by this command's flags; give the flags the run had (--sft-steps, --rl-steps, "
                                 f"--base, --quick) so the results name what made them")
        with open(os.path.join(root, "eval.json")) as f:
            per_seed.append(dict(seed=seed, stages=stages, eval=json.load(f)["results"]))
    return per_seed


def measured(xs: list) -> list[float]:
    """The values that were measured: None and nan (nothing to measure, e.g. no wrong step) left out."""
    return [x for x in xs if x is not None and x == x]


def mean_std(xs: list[float]) -> tuple[float, float]:
    xs = measured(xs)
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def pm(xs: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """mean ± std over seeds; the bare value for one seed; "(k of n seeds)" when some seeds had nothing
    to measure.

    >>> pm([0.5, 0.7]), pm([0.5, float("nan"), 0.7]), pm([None])
    ('60.0 ± 14.1', '60.0 ± 14.1 (2 of 3 seeds)', '–')
    """
    m, s = mean_std(xs)
    if m != m:
        return "–"
    k = len(measured(xs))
    return (f"{scale * m:,.{digits}f}" + (f" ± {scale * s:,.{digits}f}" if len(xs) > 1 else "")
            + (f" ({k} of {len(xs)} seeds)" if k < len(xs) else ""))


def aggregate(per_seed: list[dict]) -> dict:
    """{arm: {split: {metric: [values over seeds]}}, stage costs per arm: {key: [values]}} (the
    per-problem lists stay in the runs; the intervals read them there)."""
    evals, costs = {}, {}
    for run in per_seed:
        for arm, per_split in run["eval"].items():
            for split, m in per_split.items():
                for k, v in m.items():
                    if k != "per_problem":
                        evals.setdefault(arm, {}).setdefault(split, {}).setdefault(k, []).append(v)
        for arm, s in run["stages"].items():
            c = costs.setdefault(arm, {})
            for k in ("sup_tokens", "sup_tokens_per_example", "train_seconds", "wall_seconds"):
                c.setdefault(k, []).append(s.get(k))
    return dict(eval=evals, costs=costs)


# -----------------------------------------------------------------------------
# How sure each claim is: paired differences between arms, with a bootstrap interval

CLAIMS = (  # (the comparison, arm, the arm it is compared with, metric, the direction the paper reports); see RATIOS
    ("CoMT-SFT + CCRL minus CoT-SFT + GRPO, accuracy", "comt_ccrl", "cot_grpo", "acc", "higher"),
    ("CoMT-SFT minus CoT-SFT, accuracy", "comt_sft", "cot_sft", "acc", "higher"),
    ("CCRL minus its init (CoMT-SFT), accuracy", "comt_ccrl", "comt_sft", "acc", "higher"),
    ("GRPO minus its init (CoT-SFT), accuracy", "cot_grpo", "cot_sft", "acc", "higher"),
    ("CCRL minus its init, overconfident step errors", "comt_ccrl", "comt_sft", "overconf_err", "lower"),
    ("CoMT-SFT + CCRL minus CoT-SFT + GRPO, overconfident step errors", "comt_ccrl", "cot_grpo", "overconf_err",
     "lower"),
)
RATIOS = {"acc": ("ok", None), "overconf_err": ("overconf", "steps")}  # metric = sum(numerator) / sum(denominator)


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
    import numpy as np
    a_num, a_den, b_num, b_den = (np.asarray(x, dtype=float) for x in (a_num, a_den, b_num, b_den))
    S, N = a_num.shape
    ratio = lambda num, den: num.sum(-1) / den.sum(-1)
    rng = np.random.default_rng(seed)
    if seeds:
        rows = rng.integers(0, S, size=(n_boot, S, 1))  # (B,S,1): which seed fills each slot
        cols = rng.integers(0, N, size=(n_boot, S, N))  # (B,S,N): its problems
    else:
        rows = np.arange(S)[None, :, None]  # (1,S,1): every seed once
        cols = np.broadcast_to(rng.integers(0, N, size=(n_boot, 1, N)), (n_boot, S, N))  # one resample for all
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample (or a seed) with no steps: nan
        per_seed = ratio(a_num, a_den) - ratio(b_num, b_den)  # (S,)
        pick = lambda x: x[rows, cols]  # (B,S,N)
        boot = (ratio(pick(a_num), pick(a_den)) - ratio(pick(b_num), pick(b_den))).mean(-1)  # (B,)
    low, high = np.nanpercentile(boot, [2.5, 97.5]) if np.isfinite(boot).any() else (float("nan"),) * 2
    return dict(per_seed=[float(x) for x in per_seed], mean=float(per_seed.mean()), low=float(low), high=float(high))


def claim_arrays(per_seed: list[dict], arm: str, split: str, metric: str):
    """(numerators, denominators), each (S,N), of one arm's metric on one split over the seeds."""
    num, den = RATIOS[metric]
    rows = [run["eval"][arm][split]["per_problem"] for run in per_seed]
    return [r[num] for r in rows], [r[den] if den else [1] * len(r[num]) for r in rows]


def claims(per_seed: list[dict], splits: list[str]) -> list[dict]:
    """Every CLAIMS comparison whose arms ran, on every split, with paired_interval's figures."""
    arms = set(per_seed[0]["eval"])
    out = []
    for what, a, b, metric, expected in CLAIMS:
        if {a, b} <= arms:
            for split in splits:
                r = paired_interval(*claim_arrays(per_seed, a, split, metric), *claim_arrays(per_seed, b, split, metric))
                out.append(dict(claim=what, split=split, metric=metric, expected=expected, **r))
    return out


def reading(c: dict) -> str:
    """'within noise' where the interval covers 0, else the sign that holds."""
    if c["low"] != c["low"]:
        return "–"
    if c["low"] <= 0 <= c["high"]:
        return "within noise"
    return "higher" if c["low"] > 0 else "lower"


# -----------------------------------------------------------------------------
# The reading, claim by claim: generated from the claims and the tables, so a rerun cannot leave it behind


def interval_text(c: dict) -> str:
    return f"{pts(c['mean'])} [{pts(c['low'])}, {pts(c['high'])}]"


def claim_sentence(cs: list[dict]) -> str:
    """One comparison over the splits: its reading in distribution (`test`) and how many OOD splits
    read higher, lower or within noise, each with its interval.

    >>> c = lambda s, m, lo, hi: dict(claim="x", split=s, mean=m, low=lo, high=hi, expected="higher")
    >>> s = claim_sentence([c("test", .02, -.01, .05), c("ood_a", .04, .01, .07), c("ood_b", -.01, -.04, .02)])
    >>> print(s.replace("; ", ";\\n").replace("), ", "),\\n"))
    **x** (the paper: higher): `test` +2.0 [-1.0, +5.0], within noise;
    out of distribution higher on 1 of 2 splits (`ood_a` +4.0 [+1.0, +7.0]),
    within noise on 1 (`ood_b` -1.0 [-4.0, +2.0])
    """
    head = f"**{cs[0]['claim']}** (the paper: {cs[0]['expected']})"
    parts = [f"`{c['split']}` {interval_text(c)}, {reading(c)}" for c in cs if not c["split"].startswith("ood_")]
    ood = [c for c in cs if c["split"].startswith("ood_")]
    if ood:
        groups = [(w, [c for c in ood if reading(c) == w]) for w in ("higher", "lower", "within noise")]
        said = [f"{w} on {len(g)}" + (f" of {len(ood)} splits" if not k else "")
                + " (" + ", ".join(f"`{c['split']}` {interval_text(c)}" for c in g) + ")"
                for k, (w, g) in enumerate((w, g) for w, g in groups if g)]
        parts.append("out of distribution " + ", ".join(said))
    return head + ": " + "; ".join(parts)


def kept_table(ev: dict, base: dict, splits: list[str]) -> list[str]:
    """For each OOD split, each arm's plans right as a share of the base's own-plan figure (what
    post-training kept of the base's planning) and its accuracy beside the base's from the gold plan."""
    ood = [s for s in splits if s.startswith("ood_")]
    if "base_own" not in base or not ood:
        return []
    mean = lambda xs: statistics.fmean(measured(xs)) if measured(xs) else float("nan")
    out = ["What post-training kept of the base's planning out of distribution: plans right, % of problems (in "
           "brackets: as a share of what the base plans right in its own words), then accuracy, %; means over "
           "seeds. The base's row: its own plans right / its accuracy from the gold plan", "",
           *table_head(["arm", *ood])]
    out.append("| base | " + " | ".join(f"{100 * base['base_own'][s]['plan_correct']:.0f} / "
                                      f"{100 * base['base_plan'][s]['acc']:.0f}" for s in ood) + " |")
    for arm in (a for a in ARMS if a in ev):
        cells = []
        for s in ood:
            own, plans = base["base_own"][s]["plan_correct"], mean(ev[arm][s]["plan_correct"])
            kept = f" ({100 * plans / own:.0f}% kept)" if own > 0 else ""
            cells.append(f"{100 * plans:.0f}{kept} / {100 * mean(ev[arm][s]['acc']):.0f}")
        out.append(f"| {arm} | " + " | ".join(cells) + " |")
    return out


def kept_sentences(ev: dict, base: dict, splits: list[str]) -> list[str]:
    """One line per OOD split: how many plans the base gets right in its own words, how many each
    arm gets right after post-training, and whether every arm lost some of it."""
    mean = lambda xs: statistics.fmean(measured(xs)) if measured(xs) else float("nan")
    out = []
    for s in (s for s in splits if s.startswith("ood_") and "base_own" in base):
        own = base["base_own"][s]["plan_correct"]
        plans = {arm: mean(ev[arm][s]["plan_correct"]) for arm in ARMS if arm in ev}
        best, worst = max(plans, key=plans.get), min(plans, key=plans.get)
        out.append(f"- `{s}`: the base plans {100 * own:.0f}% right in its own words; the arms plan "
                   f"{100 * plans[worst]:.0f}-{100 * plans[best]:.0f}% right (most {best}, least {worst}): "
                   + ("every arm lost part of the base's planning." if plans[best] < own else
                      f"{best} kept all of it."))
    return out


def loss_example(args, run: dict, base: dict) -> list[str]:
    """A marked example of what post-training lost: the first problem of an OOD split that the base
    plans right in its own words and the CoMT-SFT arm (else the first arm) of the run `run` plans wrong,
    with both texts regenerated greedily (the texts the evaluation judged) and the arm's steps marked
    as `--show` marks them. [] when there is none."""
    from comt.common import check_checkpoint, load_model, pad_id
    from comt.engine import Engine
    from comt.evaluation import greedy_judgements, own_plan_judgements
    from comt.show import Example, render_text
    from comt.tasks import make_split, plan_verdict
    arm = "comt_sft" if "comt_sft" in run["eval"] else next(iter(run["eval"]))
    flags = eval_flags(args)
    new = int(flags[flags.index("--max-new-tokens") + 1]) if "--max-new-tokens" in flags else 320
    for split in (s for s in run["eval"][arm] if s.startswith("ood_") and "base_own" in base):
        own = base["base_own"][split]["per_problem"]["plan_correct"]
        planned = run["eval"][arm][split]["per_problem"]["plan_correct"]
        i = next((i for i, (a, b) in enumerate(zip(own, planned)) if a and b is False), None)
        if i is None:
            continue
        p = make_split(split, len(own))[i]
        models = {}
        for name, path in (("base", args.base), (arm, os.path.join(args.out, f"seed{run['seed']}", arm))):
            tok = check_checkpoint(path, "--base" if name == "base" else "--out")
            models[name] = (Engine(load_model(path).eval(), pad_id=pad_id(tok)), tok)
        base_text = own_plan_judgements(*models["base"], [p], new)[0]["text"]
        j = greedy_judgements(*models[arm], [p], new)[0]
        shown = render_text(Example(f"{arm} (seed {run['seed']})", p.question, p.answer, j,
                                    plan_verdict(j.text, p, j.correct)), ansi=False)
        return [f"A loss, marked (`{split}` problem {i + 1}, the first the base plans right in its own words and "
                f"{arm} plans wrong; numbers marked [confidence ✓/✗] as `evaluate.py --show` marks them):", "",
                "```text", f"Question: {p.question}", "--- base, its own plan (evaluate.py --own-plan steps): right",
                base_text.strip(), shown, "```"]
    return []


def reading_lines(ev: dict, base: dict, found: list[dict], splits: list[str]) -> list[str]:
    """The claim-by-claim reading and what post-training kept out of distribution (generated)."""
    out = ["What the default reproduces of the paper's claims, claim by claim (generated from the paired "
           "differences: \"within noise\" where the interval covers 0):", ""]
    out += ["- " + claim_sentence([c for c in found if c["claim"] == what])
            for what in dict.fromkeys(c["claim"] for c in found)]
    kept = kept_table(ev, base, splits)
    return out + ([""] + kept + [""] + kept_sentences(ev, base, splits) if kept else [])


# -----------------------------------------------------------------------------
# Tables and the chart


def pts(x: float) -> str:
    return "–" if x != x else f"{100 * x:+.1f}"


def table_head(columns: list[str]) -> list[str]:
    """A Markdown table's header and separator lines."""
    return ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]


def accuracy_table(ev: dict, base: dict, splits: list[str], key: str = "acc") -> list[str]:
    lines = table_head(["arm", *splits])
    for row, (label, _) in BASE_ROWS.items():
        if row in base:
            k = BASE_METRIC.get(row, key)
            lines.append(f"| {label} | " + " | ".join(f"{100 * base[row][s][k]:.1f}" for s in splits) + " |")
    for arm in ARMS:
        if arm in ev:
            lines.append(f"| {arm} | " + " | ".join(pm(ev[arm][s][key]) for s in splits) + " |")
    return lines


def plan_tables(ev: dict, base: dict, splits: list[str]) -> tuple[list[str], list[str]]:
    """(plan correct / plan followed, the wrong answers split three ways), arms x splits."""
    head = table_head(["arm", *splits])
    one = lambda m, k: ("–" if k not in m else  # a mean over seeds
                        f"{100 * (sum(m[k]) / len(m[k]) if isinstance(m[k], list) else m[k]):.0f}")
    rows = [(BASE_ROWS[r][0], base[r]) for r in ("base_plan", "base_own") if r in base]
    rows += [(arm, ev[arm]) for arm in ARMS if arm in ev]
    plans = ["Plans, % of problems: plan correct (its operator sequence is the gold program's) / plan followed (the "
             "execution carries out its own plan); means over seeds. The base's own plans are in its own form "
             "(`evaluate.py --own-plan steps`), which it never executes", ""] + head
    plans += [f"| {name} | " + " | ".join(f"{one(m[s], 'plan_correct')} / {one(m[s], 'plan_followed')}"
                                          for s in splits) + " |" for name, m in rows]
    wrong = ["Wrong answers, % of problems: wrong plan / right plan not followed / right plan followed but "
             "executed wrongly (they add up to 100 - accuracy)", ""] + head
    wrong += [f"| {name} | " + " | ".join(" / ".join(one(m[s], k) for k in ("wrong_plan", "not_followed",
                                                                           "executed_wrongly"))
                                          for s in splits) + " |" for name, m in rows if "wrong_plan" in m[splits[0]]]
    return plans, wrong


def claims_grid(found: list[dict], splits: list[str]) -> list[str]:
    """The claims as comparisons x splits: mean [95% interval], * where the interval excludes 0."""
    out = table_head(["comparison", *splits])
    for what in dict.fromkeys(c["claim"] for c in found):
        cells = {c["split"]: c for c in found if c["claim"] == what}
        out.append(f"| {what} | " + " | ".join(
            f"{pts(c['mean'])} [{pts(c['low'])}, {pts(c['high'])}]" + ("*" if reading(c) in ("higher", "lower") else "")
            for c in (cells[s] for s in splits)) + " |")
    return out


def claims_table(found: list[dict], seeds: list[int]) -> list[str]:
    out = table_head(["comparison", "split", *(f"seed {k}" for k in seeds), "mean", "95% interval", "reading"])
    for c in found:
        out.append(f"| {c['claim']} | {c['split']} | " + " | ".join(map(pts, c["per_seed"]))
                   + f" | {pts(c['mean'])} | [{pts(c['low'])}, {pts(c['high'])}] | {reading(c)} |")
    return out


def report(agg: dict, base: dict, found: list[dict], seeds: list[int], command: str,
           example: list[str] = ()) -> tuple[str, str]:
    """(the full results Markdown, the shorter block the README shows: accuracy, paired differences
    (accuracy and overconfident errors), the plans that explain the OOD rows, then the generated
    reading and the marked example of a loss; the cost and the rest only in the full Markdown)."""
    ev, costs = agg["eval"], agg["costs"]
    splits = list(next(iter(ev.values())))
    head = [f"Produced by `{command}` ({len(seeds)} seed(s): {', '.join(map(str, seeds))})"
            + ("; mean ± std over seeds." if len(seeds) > 1 else "."), ""]
    acc = ["Greedy accuracy, % (strict: the `Answer:` line). The base rows are the shipped base model, greedy, so "
           "the same in every seed: from the gold plan (the ceiling execution allows), its own plans (the share it "
           "plans right in its own words: the planning ceiling) and from the question alone under the post-training "
           "prompt (the floor)", ""] + accuracy_table(ev, base, splits)
    how = ("a 95% interval from 10,000 hierarchical bootstrap resamples: the seeds drawn with replacement, then "
           "the problems within each (`experiment.paired_interval`); it counts seed-to-seed variation, so with three "
           "seeds it is wide")
    sure = [f"Paired differences between arms, percentage points: the mean over seeds and {how}; * where the "
            "interval excludes 0 (elsewhere the difference is within noise)", ""] + claims_grid(found, splits)
    if not found:
        sure = ["No paired differences: the arms run hold none of the compared pairs (`experiment.CLAIMS`)"]
    plans, wrong = plan_tables(ev, base, splits)
    overconf = ["Overconfident step errors by split, % of steps (wrong steps written with confidence > 0.9)", "",
                *table_head(["arm", *splits])]
    overconf += [f"| {arm} | " + " | ".join(pm(ev[arm][s]["overconf_err"]) for s in splits) + " |"
                 for arm in ARMS if arm in ev]
    cost = ["Cost per stage (this arm's own stage; RL arms add their SFT's; SFT tokens exclude the replay, which is "
            "the same for both arms)", "", *table_head(["arm", "supervised tokens", "per example", "train s",
                                                         "wall s"])]
    cost += [f"| {arm} | {pm(costs[arm]['sup_tokens'], 1, 0)} | {pm(costs[arm]['sup_tokens_per_example'], 1, 1)} | "
             f"{pm(costs[arm]['train_seconds'], 1)} | {pm(costs[arm]['wall_seconds'], 1)} |" for arm in ARMS
             if arm in costs]
    readme = head + acc + [""] + sure + [""] + plans + [""] + reading_lines(ev, base, found, splits)
    if example:
        readme += ["", *example]
    return "\n".join(readme + [""] + cost + [""] + overconf + [""] + extra_tables(ev, base, found, seeds, splits, how)
                     + [""] + wrong) + "\n", "\n".join(readme) + "\n"


def extra_tables(ev: dict, base: dict, found: list[dict], seeds: list[int], splits: list[str], how: str) -> list[str]:
    """What results/default.md holds beyond the README's block."""
    calib = ["Calibration and format on `test`, %: answer ECE, step accuracy, overconfident step errors, wrong "
             "answers whose first wrong step was confident, outputs that open with a digit-free plan", "",
             *table_head(["arm", "answer ECE", "step acc", "overconf err", "first wrong step confident", "plan rate"])]
    calib += [f"| {arm} | " + " | ".join(pm(ev[arm]["test"][k]) for k in ("ece", "step_acc", "overconf_err",
                                                                           "first_wrong_conf", "plan_rate")) + " |"
              for arm in ARMS if arm in ev and "test" in ev[arm]]
    out = calib + (["", f"The paired differences per seed, with their mean and {how}", ""] + claims_table(found, seeds)
                   if found else [])
    out += ["", "Greedy accuracy, lenient (the last number when there is no `Answer:` line), %", ""]
    out += accuracy_table(ev, base, splits, "acc_lenient")
    out += ["", "`test` accuracy by seed, % (the RL arms' gain over the SFT arm they start from is per seed)", "",
            *table_head(["arm", *(f"seed {k}" for k in seeds)])]
    out += [f"| {arm} | " + " | ".join(f"{100 * a:.1f}" for a in ev[arm]["test"]["acc"]) + " |"
            for arm in ARMS if arm in ev and "test" in ev[arm]]
    return out


def accuracy_chart(ev: dict, base: dict, path: str):
    """Accuracy by split: each arm's mean over seeds with its std as an error bar, and the base
    model's ceilings (accuracy from the gold plan, plans right in its own form) and floor (question
    only) marked on every split."""
    from comt.common import pyplot
    plt = pyplot()
    splits, arms = list(next(iter(ev.values()))), [a for a in ARMS if a in ev]
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(splits)), 4.2))
    width = 0.8 / len(arms)
    for j, arm in enumerate(arms):
        xs = [i + (j - (len(arms) - 1) / 2) * width for i in range(len(splits))]
        stats = [mean_std(ev[arm][s]["acc"]) for s in splits]
        ax.bar(xs, [m for m, _ in stats], width, yerr=[sd for _, sd in stats], capsize=3, label=arm)
    for row, style in (("base_plan", dict(color="black", ls="-")), ("base_own", dict(color="black", ls=":")),
                       ("base_plain", dict(color="grey", ls="--"))):
        if row in base:
            for i, s in enumerate(splits):
                ax.hlines(base[row][s][BASE_METRIC.get(row, "acc")], i - 0.45, i + 0.45, lw=2,
                          label=BASE_ROWS[row][0] if i == 0 else None, **style)
    ax.set_xticks(range(len(splits)), splits, rotation=15)
    ax.set(ylabel="greedy accuracy (mean ± std over seeds)", ylim=(0, 1), title="accuracy by split")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2))  # below: no ceiling hidden
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def update_readme(md: str, path: str = "README.md", start: str = "<!-- results:start -->",
                  end: str = "<!-- results:end -->") -> bool:
    """Put the result tables between the README's markers; False when it has none."""
    if not os.path.isfile(path):
        return False
    text = open(path).read()
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    with open(path, "w") as f:
        f.write(head + start + "\n" + md + rest[rest.index(end):])
    return True


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Four arms x seeds from one base, then evaluate.py on all of them.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--seeds", type=SEED, nargs="+", default=[0, 1, 2], help="one run of every arm per seed")
    ap.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, help=f"arms to run (the SFT arms they start from "
                    f"are added); all: {' '.join(ARMS)}")
    ap.add_argument("--base", default=None, help="base model directory (default: the shipped models/base; quick: "
                    "a tiny one built in --out)")
    ap.add_argument("--out", default=None, help="where the runs go (default runs/exp, quick: runs/exp_quick)")
    ap.add_argument("--results", default=None, help="stem of the .md and .json results (default "
                    "results/default; quick: <out>/results)")
    ap.add_argument("--sft-steps", type=COUNT, default=None, help="steps of the SFT arms (default: sft_comt.py's)")
    ap.add_argument("--rl-steps", type=COUNT, default=None, help="steps of the RL arms (default: ccrl.py's)")
    ap.add_argument("--eval-n", type=COUNT, default=EVAL_N, help="problems per split in the final evaluation")
    ap.add_argument("--resume", action="store_true", help="keep the stages of an earlier run in --out that finished "
                    "(complete log and checkpoint) and run the rest: continues an interrupted experiment")
    ap.add_argument("--from-logs", action="store_true", help="train nothing: rebuild the results from a finished "
                    "run's logs and eval.json files in --out")
    ap.add_argument("--update-readme", action="store_true", help="also put the tables into README.md between its "
                    "results markers (what the committed README shows)")
    ap.add_argument("--quick", action="store_true", help="tiny budgets and one seed: checks the pipeline, not "
                    "the method")
    args = ap.parse_args(argv)
    if len(set(args.seeds)) < len(args.seeds):
        ap.error(f"--seeds {' '.join(map(str, args.seeds))}: a seed given twice would be counted as two runs")
    budgets = [f for f, v in (("--sft-steps", args.sft_steps), ("--rl-steps", args.rl_steps),
                              ("--eval-n", args.eval_n != EVAL_N)) if v]
    if args.quick and budgets:
        ap.error(f"--quick sets its own budgets: {', '.join(budgets)} would not apply")
    args.arms = with_parents(args.arms)
    if args.quick:
        args.seeds = args.seeds[:1]
        args.out = args.out or "runs/exp_quick"
        args.base = args.base or os.path.join(args.out, "base")
        args.results = args.results or os.path.join(args.out, "results")
    args.out = args.out or "runs/exp"
    args.base = args.base or DEFAULT_BASE
    args.results = args.results or "results/default"
    for path in [args.results + ".md", args.results + ".json"] + ["README.md"] * args.update_readme:
        if unwritable(path):
            ap.error(f"cannot write {path}: {unwritable(path)} (found now, before the experiment runs)")
    return args


def main(argv=None):
    args = parse_args(argv)
    command = produced_by(args)
    lock_out(args.out)  # one experiment per --out: two would delete each other's stages
    if args.from_logs:
        per_seed = runs_from_logs(args)
        base, seconds = base_rows(args, keep=True)
        return finish(args, per_seed, base, read_build(args.base), command, total_wall(per_seed) + seconds)
    if not os.path.isfile(os.path.join(args.base, "config.json")):
        run_stage(["base.py", "--out", args.base, *(QUICK["base"] if args.quick else [])],
                  os.path.join(args.out, "base.log"))
    base_summary = read_build(args.base)
    base, base_seconds = base_rows(args, keep=args.resume)
    per_seed = []
    for seed in args.seeds:
        root = os.path.join(args.out, f"seed{seed}")
        os.makedirs(root, exist_ok=True)
        stages, ran = {}, set()
        for arm in args.arms:
            keep = args.resume and ARMS[arm][2] not in ran  # an arm whose SFT parent was retrained is retrained too
            stages[arm], now = finished_or_run(stage_command(args, seed, arm), os.path.join(root, f"{arm}.log"),
                                               os.path.join(root, arm), keep)
            if now:
                ran.add(arm)
        eval_json = os.path.join(root, "eval.json")
        stages["eval"], _ = finished_or_run(
            ["evaluate.py", "--ckpt", *(os.path.join(root, a) for a in args.arms), "--json", eval_json,
             *eval_flags(args),
             *([] if seed == args.seeds[0] else ["--no-plots"])],
            os.path.join(root, "eval.log"), None, args.resume and not ran)
        with open(eval_json) as f:
            per_seed.append(dict(seed=seed, stages=stages, eval=json.load(f)["results"]))
    finish(args, per_seed, base, base_summary, command, total_wall(per_seed) + base_seconds)


def stage_command(args, seed: int, arm: str) -> list[str]:
    """The command of one arm's stage in one seed: the README's, with --eval-n 0 (evaluate.py measures
    every arm afterwards) and the budget flags given."""
    script, flags, parent = ARMS[arm]
    root = os.path.join(args.out, f"seed{seed}")
    src = ["--model", args.base] if parent is None else ["--init", os.path.join(root, parent)]
    steps = args.sft_steps if parent is None else args.rl_steps
    budget = QUICK["sft" if parent is None else "rl"] if args.quick else ["--steps", str(steps)] * bool(steps) + [
        "--eval-n", "0"]
    return [script, *flags, *src, "--out", os.path.join(root, arm), "--seed", str(seed), *budget]


def produced_by(args) -> str:
    """The command that made these numbers: every flag that shapes them (--resume, --from-logs and
    where the files go change nothing in them)."""
    extra = [" --quick"] * args.quick
    extra += [" --seeds " + " ".join(map(str, args.seeds))] * (not args.quick and args.seeds != [0, 1, 2])
    extra += [" --arms " + " ".join(args.arms)] * (args.arms != DEFAULT_ARMS)
    extra += [f" --sft-steps {args.sft_steps}"] * bool(args.sft_steps) + [f" --rl-steps {args.rl_steps}"] * bool(args.rl_steps)
    extra += [f" --eval-n {args.eval_n}"] * (args.eval_n != EVAL_N and not args.quick)
    extra += [f" --base {args.base}"] * (args.base != DEFAULT_BASE and not args.quick)
    return "python experiment.py" + "".join(extra)


def total_wall(per_seed: list[dict]) -> float:
    """Seconds the stages and evaluations took, summed (the same whether or not the run was resumed)."""
    return sum(s["wall_seconds"] for run in per_seed for s in run["stages"].values())


def finish(args, per_seed: list[dict], base: dict, base_summary: dict, command: str, total_seconds: float):
    """Aggregate over seeds, write --results .md/.json and the PNGs (the accuracy chart over seeds,
    the first seed's reliability diagrams), print the tables."""
    agg = aggregate(per_seed)
    splits = list(next(iter(agg["eval"].values())))
    found = claims(per_seed, splits)
    md, readme = report(agg, base, found, args.seeds, command, loss_example(args, per_seed[0], base))
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    with open(args.results + ".md", "w") as f:
        f.write(md)
    write_json(dict(command=command, seeds=args.seeds, base_build=base_summary, base=base, claims=found,
                    runs=per_seed, aggregate=agg, total_seconds=round(total_seconds, 1)), args.results + ".json")
    accuracy_chart(agg["eval"], base, args.results + "_accuracy.png")
    first = os.path.join(args.out, f"seed{args.seeds[0]}", "eval_reliability.png")
    if os.path.isfile(first):
        shutil.copy(first, args.results + "_reliability.png")
    if args.update_readme:
        update_readme(readme)
    print(md)
    print(json.dumps(dict(summary=True, results=args.results + ".md", seeds=len(args.seeds),
                          total_seconds=round(total_seconds, 1))))


if __name__ == "__main__":
    main()
