"""
The side-by-side experiment on the embedded default: four arms from one base model, same data,
same budgets, several seeds, then one evaluation of everything.

    python experiment.py                  # 3 seeds -> results/default.md, results/default.json (+ PNGs)
    python experiment.py --update-readme  # the same, and the README's results tables replaced by them
    python experiment.py --quick          # tiny budgets, one seed, in runs/exp_quick (a smoke test; CI)
    python experiment.py --resume         # continue an interrupted run: finished stages are kept
    python experiment.py --seeds 0 1 --rl-steps 50 --out runs/exp2 --results results/exp2
    python experiment.py --seeds 0 --arms cot_grpo comt_ccrl comt_grpo cot_ccrl --results results/arms2x2

Arms (the SFT arms start from --base, the shipped models/base by default):
    cot_sft     sft_comt.py --format cot              (the paper's baseline SFT)
    comt_sft    sft_comt.py --format comt             (CoMT)
    cot_grpo    ccrl.py --reward outcome from cot_sft  (baseline RL)
    comt_ccrl   ccrl.py --reward ccrl from comt_sft   (CoMT + CCRL)
    comt_grpo   ccrl.py --reward outcome from comt_sft (with cot_ccrl: the rest of the 2x2, --arms)
    cot_ccrl    ccrl.py --reward ccrl from cot_sft
Per seed, the seed sets the SFT data order and the RL prompts and samples; the base, the training
problems and the evaluation problems are the same for every arm and seed. Each stage runs as its own
process (exactly the README commands, plus --eval-n 0: evaluate.py measures every arm afterwards,
and budget flags when given); its final JSON summary line is kept, and its wall time is appended to
its log, so --resume and --from-logs rebuild every number from the logs.

Outputs: runs under --out/seed<k>/<arm>, evaluate.py's JSON per seed, and --results .md / .json:
mean +- std over seeds per arm x split (strict and lenient accuracy), test accuracy per seed,
calibration (answer ECE, step overconfident-error rate) and plan rate, supervised tokens and
wall time per stage. The .md holds the tables
the README quotes; the PNGs are evaluate.py's, for the first seed.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from common import COUNT

ARMS = {  # arm: (script, its flags, the arm it starts from); the first four are the paper's comparison
    "cot_sft": ("sft_comt.py", ["--format", "cot"], None),
    "comt_sft": ("sft_comt.py", ["--format", "comt"], None),
    "cot_grpo": ("ccrl.py", ["--reward", "outcome"], "cot_sft"),
    "comt_ccrl": ("ccrl.py", ["--reward", "ccrl"], "comt_sft"),
    "comt_grpo": ("ccrl.py", ["--reward", "outcome"], "comt_sft"),  # the rest of the 2x2 of SFT format x reward
    "cot_ccrl": ("ccrl.py", ["--reward", "ccrl"], "cot_sft"),
}
DEFAULT_ARMS = ["cot_sft", "comt_sft", "cot_grpo", "comt_ccrl"]
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
    """The final JSON summary line a stage printed to its log, with the wall time run_stage appended
    after it; None when the stage never finished (no log, or killed before its last line)."""
    if not os.path.isfile(log_path):
        return None
    summary, wall = None, None
    with open(log_path) as f:
        for line in f:
            if line.startswith("{") and '"summary": true' in line:
                summary = json.loads(line)
            elif line.startswith('{"stage_wall_seconds"'):
                wall = json.loads(line)["stage_wall_seconds"]
    return None if summary is None or wall is None else dict(summary, wall_seconds=wall)


def run_stage(cmd: list[str], log_path: str) -> dict:
    """Run one stage with its output in log_path, append its wall time there; return its record."""
    t0 = time.time()
    print("$ " + " ".join(cmd), flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, *cmd], stdout=log, stderr=subprocess.STDOUT, text=True)
        if proc.wait():
            raise SystemExit(f"stage failed (exit {proc.returncode}): {' '.join(cmd)}; see {log_path}")
        log.write(json.dumps(dict(stage_wall_seconds=round(time.time() - t0, 1))) + "\n")
    return stage_record(log_path)


def finished_or_run(cmd: list[str], log_path: str, ckpt: str | None, keep: bool) -> tuple[dict, bool]:
    """(the stage's record, whether it ran now). With keep (--resume), a stage whose log is complete
    and whose checkpoint (if any) is on disk is not run again; anything else runs from scratch."""
    record = stage_record(log_path) if keep else None
    if record is not None and (ckpt is None or os.path.isfile(os.path.join(ckpt, "config.json"))):
        print(f"kept: {log_path} ({record['wall_seconds']} s)", flush=True)
        return record, False
    if ckpt is not None:
        shutil.rmtree(ckpt, ignore_errors=True)  # a rerun starts the arm afresh
    return run_stage(cmd, log_path), True


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
        with open(os.path.join(root, "eval.json")) as f:
            per_seed.append(dict(seed=seed, stages=stages, eval=json.load(f)["results"]))
    return per_seed


def mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and x == x]  # None and nan (no value to measure) are left out
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def pm(xs: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """mean ± std over seeds; the bare value for one seed."""
    m, s = mean_std(xs)
    if m != m:
        return "–"
    return f"{scale * m:,.{digits}f}" + (f" ± {scale * s:,.{digits}f}" if len(xs) > 1 else "")


def aggregate(per_seed: list[dict]) -> dict:
    """{arm: {split: {metric: [values over seeds]}}, stage costs per arm: {key: [values]}}."""
    evals, costs = {}, {}
    for run in per_seed:
        for arm, per_split in run["eval"].items():
            for split, m in per_split.items():
                for k, v in m.items():
                    evals.setdefault(arm, {}).setdefault(split, {}).setdefault(k, []).append(v)
        for arm, s in run["stages"].items():
            c = costs.setdefault(arm, {})
            for k in ("sup_tokens", "sup_tokens_per_example", "train_seconds", "wall_seconds"):
                c.setdefault(k, []).append(s.get(k))
    return dict(eval=evals, costs=costs)


def report(agg: dict, seeds: list[int], command: str) -> str:
    ev, costs = agg["eval"], agg["costs"]
    splits = list(next(iter(ev.values())))
    out = [f"Produced by `{command}` ({len(seeds)} seed(s): {', '.join(map(str, seeds))})"
           + ("; mean ± std over seeds." if len(seeds) > 1 else "."), "",
           "Greedy accuracy, % (strict: the `Answer:` line; lenient: the last number)", "",
           "| arm | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
    for arm in ARMS:
        if arm in ev:
            out.append(f"| {arm} | " + " | ".join(pm(ev[arm][s]["acc"]) for s in splits) + " |")
    out += ["", "| arm (lenient) | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
    for arm in ARMS:
        if arm in ev:
            out.append(f"| {arm} | " + " | ".join(pm(ev[arm][s]["acc_lenient"]) for s in splits) + " |")
    out += ["", "`test` accuracy by seed, % (the RL arms' gain over the SFT arm they start from is per seed)", "",
            "| arm | " + " | ".join(f"seed {k}" for k in seeds) + " |", "|---" * (len(seeds) + 1) + "|"]
    for arm in ARMS:
        if arm in ev and "test" in ev[arm]:
            out.append(f"| {arm} | " + " | ".join(f"{100 * a:.1f}" for a in ev[arm]["test"]["acc"]) + " |")
    out += ["", "Calibration and format on `test`, %: answer ECE, step accuracy, overconfident step errors (wrong "
            "steps with confidence > 0.9, share of all steps), wrong answers whose first wrong step was confident, "
            "outputs that open with a digit-free plan", "",
            "| arm | answer ECE | step acc | overconf err | first wrong step confident | plan rate |",
            "|---|---|---|---|---|---|"]
    for arm in ARMS:
        if arm in ev and "test" in ev[arm]:
            m = ev[arm]["test"]
            out.append(f"| {arm} | {pm(m['ece'])} | {pm(m['step_acc'])} | {pm(m['overconf_err'])} | "
                       f"{pm(m['first_wrong_conf'])} | {pm(m['plan_rate'])} |")
    out += ["", "Cost per stage (this arm's own stage; RL arms add their SFT's; SFT tokens exclude the replay, "
            "which is the same for both arms)", "",
            "| arm | supervised tokens | per example | train s | wall s |", "|---|---|---|---|---|"]
    for arm in ARMS:
        if arm in costs:
            c = costs[arm]
            out.append(f"| {arm} | {pm(c['sup_tokens'], 1, 0)} | {pm(c['sup_tokens_per_example'], 1, 1)} | "
                       f"{pm(c['train_seconds'], 1)} | {pm(c['wall_seconds'], 1)} |")
    return "\n".join(out) + "\n"


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
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run of every arm per seed")
    ap.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, help=f"arms to run (the SFT arms they start from "
                    f"are added); all: {' '.join(ARMS)}")
    ap.add_argument("--base", default=None, help="base model directory (default: the shipped models/base; quick: "
                    "a tiny one built in --out)")
    ap.add_argument("--out", default=None, help="where the runs go (default runs/exp, quick: runs/exp_quick)")
    ap.add_argument("--results", default=None, help="stem of the .md and .json results (default "
                    "results/default; quick: <out>/results)")
    ap.add_argument("--sft-steps", type=COUNT, default=None, help="steps of the SFT arms (default: sft_comt.py's)")
    ap.add_argument("--rl-steps", type=COUNT, default=None, help="steps of the RL arms (default: ccrl.py's)")
    ap.add_argument("--eval-n", type=COUNT, default=200, help="problems per split in the final evaluation")
    ap.add_argument("--resume", action="store_true", help="keep the stages of an earlier run in --out that finished "
                    "(complete log and checkpoint) and run the rest: continues an interrupted experiment")
    ap.add_argument("--from-logs", action="store_true", help="train nothing: rebuild the results from a finished "
                    "run's logs and eval.json files in --out")
    ap.add_argument("--update-readme", action="store_true", help="also put the tables into README.md between its "
                    "results markers (what the committed README shows)")
    ap.add_argument("--quick", action="store_true", help="tiny budgets and one seed: checks the pipeline, not "
                    "the method")
    args = ap.parse_args(argv)
    args.arms = with_parents(args.arms)
    if args.quick:
        args.seeds = args.seeds[:1]
        args.out = args.out or "runs/exp_quick"
        args.base = args.base or os.path.join(args.out, "base")
        args.results = args.results or os.path.join(args.out, "results")
    args.out = args.out or "runs/exp"
    args.base = args.base or "models/base"
    args.results = args.results or "results/default"
    return args


def main(argv=None):
    args = parse_args(argv)
    command = produced_by(args)
    os.makedirs(args.out, exist_ok=True)
    if args.from_logs:
        per_seed = runs_from_logs(args)
        return finish(args, per_seed, read_build(args.base), command, total_wall(per_seed))
    if not os.path.isfile(os.path.join(args.base, "config.json")):
        run_stage(["base.py", "--out", args.base, *(QUICK["base"] if args.quick else [])],
                  os.path.join(args.out, "base.log"))
    base_summary = read_build(args.base)
    # the stages skip their own quick evaluation: evaluate.py measures every arm afterwards
    sft_flags = QUICK["sft"] if args.quick else ["--steps", str(args.sft_steps)] * bool(args.sft_steps) + ["--eval-n", "0"]
    rl_flags = QUICK["rl"] if args.quick else ["--steps", str(args.rl_steps)] * bool(args.rl_steps) + ["--eval-n", "0"]
    per_seed = []
    for seed in args.seeds:
        root = os.path.join(args.out, f"seed{seed}")
        os.makedirs(root, exist_ok=True)
        stages, ran = {}, set()
        for arm in args.arms:
            script, flags, parent = ARMS[arm]
            out = os.path.join(root, arm)
            src = ["--model", args.base] if parent is None else ["--init", os.path.join(root, parent)]
            budget = sft_flags if parent is None else rl_flags
            log = os.path.join(root, f"{arm}.log")
            keep = args.resume and parent not in ran  # an arm whose SFT parent was retrained is retrained too
            stages[arm], now = finished_or_run([script, *flags, *src, "--out", out, "--seed", str(seed), *budget],
                                               log, out, keep)
            if now:
                ran.add(arm)
        eval_json = os.path.join(root, "eval.json")
        stages["eval"], _ = finished_or_run(
            ["evaluate.py", "--ckpt", *(os.path.join(root, a) for a in args.arms), "--json", eval_json,
             *(QUICK["eval"] if args.quick else ["--n", str(args.eval_n)]),
             *([] if seed == args.seeds[0] else ["--no-plots"])],
            os.path.join(root, "eval.log"), None, args.resume and not ran)
        with open(eval_json) as f:
            per_seed.append(dict(seed=seed, stages=stages, eval=json.load(f)["results"]))
    finish(args, per_seed, base_summary, command, total_wall(per_seed))


def produced_by(args) -> str:
    """The command that trains these runs (--resume and --from-logs change nothing in them)."""
    extra = [" --quick"] * args.quick
    extra += [" --seeds " + " ".join(map(str, args.seeds))] * (not args.quick and args.seeds != [0, 1, 2])
    extra += [" --arms " + " ".join(args.arms)] * (args.arms != DEFAULT_ARMS)
    extra += [f" --sft-steps {args.sft_steps}"] * bool(args.sft_steps) + [f" --rl-steps {args.rl_steps}"] * bool(args.rl_steps)
    return "python experiment.py" + "".join(extra)


def total_wall(per_seed: list[dict]) -> float:
    """Seconds the stages and evaluations took, summed (the same whether or not the run was resumed)."""
    return sum(s["wall_seconds"] for run in per_seed for s in run["stages"].values())


def finish(args, per_seed: list[dict], base_summary: dict, command: str, total_seconds: float | None):
    """Aggregate over seeds, write --results .md/.json (+ the first seed's PNGs), print the tables."""
    agg = aggregate(per_seed)
    md = report(agg, args.seeds, command)
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    with open(args.results + ".md", "w") as f:
        f.write(md)
    with open(args.results + ".json", "w") as f:
        json.dump(dict(command=command, seeds=args.seeds, base=base_summary, runs=per_seed, aggregate=agg,
                       total_seconds=total_seconds and round(total_seconds, 1)), f, indent=1, default=lambda x: None)
    first = os.path.join(args.out, f"seed{args.seeds[0]}", "eval")
    for png in ("_reliability.png", "_accuracy.png"):
        if os.path.isfile(first + png):
            shutil.copy(first + png, args.results + png)
    if args.update_readme:
        update_readme(md)
    print(md)
    print(json.dumps(dict(summary=True, results=args.results + ".md", seeds=len(args.seeds),
                          total_seconds=total_seconds and round(total_seconds, 1))))


if __name__ == "__main__":
    main()
