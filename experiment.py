"""
The side-by-side experiment on the embedded default: the 2x2 of SFT target (CoMT or CoT) x RL reward
(CCRL or outcome-only GRPO) from one base model, with the two SFT arms themselves, same data, same
budgets, several seeds, then one evaluation of everything.

    python experiment.py                  # 6 arms x 3 seeds -> results/default.md, .json and PNGs
    python experiment.py --update-readme  # the same, and the README's results block replaced by them
    python experiment.py --quick          # tiny budgets, one seed, in runs/exp_quick (a smoke test; CI)
    python experiment.py --resume         # continue an interrupted run: finished stages kept, a stopped one continued
    python experiment.py --seeds 0 1 --rl-steps 50 --out runs/exp2 --results results/exp2
    python experiment.py --arms cot_grpo comt_ccrl --results results/pipelines   # the SFT arms come along

Arms (the SFT arms start from --base, the shipped models/base by default):
    cot_sft     sft_comt.py --format cot               (the paper's baseline SFT)
    comt_sft    sft_comt.py --format comt              (CoMT)
    cot_grpo    ccrl.py --reward outcome from cot_sft   (the paper's baseline pipeline)
    comt_ccrl   ccrl.py --reward ccrl from comt_sft    (the paper's pipeline)
    comt_grpo   ccrl.py --reward outcome from comt_sft  (the reward's effect from the same init ...
    cot_ccrl    ccrl.py --reward ccrl from cot_sft      ... and the SFT target's under the same reward)
Per seed, the seed sets the SFT data order and the RL prompts and samples; the base, the evaluation
problems and the budgets are the same for every arm and seed. Each stage runs as its own process
(exactly the README commands, plus budget flags when given, and checks on `val`: --val-n problems
every --val-every steps, each logged with the tokens and seconds the stage has spent so far); its
eval lines and final JSON summary line are kept, and its wall time is appended to its log, so
--resume and --from-logs rebuild every number from the logs (--from-logs runs nothing: every log must
be made by the commands its flags make). SIGINT or SIGTERM (a scheduler) is passed on to the running
stage, which saves a checkpoint and stops; --resume continues it from there. evaluate.py then
measures every arm on `test` and the OOD splits. The base model itself is evaluated once (greedy, so the same in every
seed): from the gold plan (`evaluate.py --gold-plan`: the ceiling of what its execution allows), in
its own plan form (its planning ceiling) and from the question alone (the floor).

Outputs: runs under --out/seed<k>/<arm>, evaluate.py's JSON per seed, and --results .md / .json
(comt/report.py writes them): mean +- std over seeds per arm x split, with the base's rows and the
mean of the OOD splits (`ood_pooled`, as the paper averages its OOD benchmarks); paired differences
between arms with a 95% hierarchical bootstrap interval (seeds, then problems within each;
comt/stats.py): the pipeline against its baseline, the reward's effect from each init, the SFT
target's effect under each reward, each RL stage against its init, in accuracy, and in
overconfident step errors, step errors, the confidence of wrong steps and step AUROC (error rate and
calibration apart); the cost: exact token counts per stage (supervised, trained, forward only),
seconds with a flag where a stage shared the machine, and the tokens each pipeline spent to first
reach REACH shares of `val`; plans and the three kinds of wrong answer; the reading, generated
claim by claim. PNGs: <results>_accuracy.png (accuracy by split), <results>_cost.png (`val`
accuracy against tokens, one line per pipeline) and the first seed's reliability diagrams.
--update-readme puts the main tables and the reading into the README.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from comt import report as rp
from comt.common import code_version, replacing, unwritable, why, write_json
from comt.flags import COUNT, NONNEG_INT, SEED
from comt.lifecycle import STOPPED, lock_held, lock_out
from comt.stats import claims, pool_ood

ARMS = {  # arm: (script, its flags, the arm it starts from)
    "cot_sft": ("sft_comt.py", ["--format", "cot"], None),
    "comt_sft": ("sft_comt.py", ["--format", "comt"], None),
    "cot_grpo": ("ccrl.py", ["--reward", "outcome"], "cot_sft"),
    "comt_ccrl": ("ccrl.py", ["--reward", "ccrl"], "comt_sft"),
    "comt_grpo": ("ccrl.py", ["--reward", "outcome"], "comt_sft"),
    "cot_ccrl": ("ccrl.py", ["--reward", "ccrl"], "cot_sft"),
}
DEFAULT_ARMS = list(ARMS)
DEFAULT_BASE, EVAL_N, VAL_N, VAL_EVERY = "models/base", 200, 200, 20
QUICK = dict(base=["--tokenizer-docs", "1500", "--vocab", "400", "--steps", "20", "--eval-n", "4", "--dim", "64",
                   "--layers", "2", "--heads", "2", "--kv-heads", "1", "--batch", "4"],
             sft=["--steps", "4", "--n-train", "64", "--eval-n", "4", "--eval-max-new", "16", "--eval-split", "val",
                  "--eval-every", "2"],
             rl=["--steps", "2", "--group-size", "2", "--prompts-per-step", "2", "--n-train", "64",
                 "--max-new-tokens", "24", "--eval-n", "4", "--eval-every", "2", "--eval-split", "val"],
             eval=["--n", "4", "--max-new-tokens", "24"])


def with_parents(arms: list[str]) -> list[str]:
    """The arms asked for plus the SFT arms they start from, in ARMS order."""
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise SystemExit(f"--arms: unknown {', '.join(sorted(unknown))}; choose from {', '.join(ARMS)}")
    wanted = set(arms) | {ARMS[a][2] for a in arms if ARMS[a][2]}
    return [a for a in ARMS if a in wanted]


def read_build(base: str) -> dict:
    """The base model's build summary (base.py writes build.json), {} when it has none; one line when
    it is not a JSON object."""
    path = os.path.join(base, "build.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            build = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"--base {base}: its build.json cannot be read ({why(e)})") from None
    if not isinstance(build, dict):
        raise SystemExit(f"--base {base}: its build.json holds a {type(build).__name__}, not base.py's summary")
    return build


def stage_record(log_path: str) -> dict | None:
    """The final JSON summary line a stage printed to its log, with its eval lines (`curve`: the checks
    during training, each with the cost so far, one per step: a resumed stage logs the steps after its
    checkpoint again) and the wall time and command run_stage appended after it; None when the stage
    never finished (no log, or stopped or killed before its last line)."""
    if not os.path.isfile(log_path):
        return None
    summary, end, curve = None, None, {}
    with open(log_path) as f:
        for line in f:
            if line.startswith("{") and '"summary": true' in line:
                summary = json.loads(line)
            elif line.startswith('{"eval": true'):
                point = json.loads(line)
                curve[point["step"]] = point
            elif line.startswith('{"stage_wall_seconds"'):
                end = json.loads(line)
    if summary is None or end is None:
        return None
    return dict(summary, curve=[curve[k] for k in sorted(curve)], wall_seconds=end["stage_wall_seconds"],
                stage_command=end.get("command"), stage_code=end.get("code"))


def stage_parts(log_path: str) -> tuple[list | None, float]:
    """(the command a stage's log was started for, the seconds of its earlier interrupted parts)."""
    command, seconds = None, 0.0
    if os.path.isfile(log_path):
        with open(log_path) as f:
            for line in f:
                if line.startswith('{"stage_start"'):
                    command = json.loads(line)["command"]
                elif line.startswith('{"stage_part_seconds"'):
                    seconds += json.loads(line)["stage_part_seconds"]
    return command, seconds


def run_stage(cmd: list[str], log_path: str, resume: bool = False) -> dict:
    """Run one stage (with resume: continue it from its checkpoint, `--out OUT --resume`) with its
    output in log_path, and append its wall time and command there; return its record. SIGINT and
    SIGTERM are passed on to the stage, which saves and stops; a stage that fails or stops ends the
    experiment (--resume continues it)."""
    t0, (_, earlier) = time.time(), stage_parts(log_path) if resume else (None, 0.0)
    run = [cmd[0], "--out", cmd[cmd.index("--out") + 1], "--resume"] if resume else cmd
    print("$ " + " ".join(run), flush=True)
    with open(log_path, "a" if resume else "w") as log:
        if not resume:
            log.write(json.dumps(dict(stage_start=True, command=cmd)) + "\n")
            log.flush()
        proc = subprocess.Popen([sys.executable, *run], stdout=log, stderr=subprocess.STDOUT, text=True)
        code = wait_passing_signals(proc)
        seconds = round(time.time() - t0, 1)
        if code:
            log.write(json.dumps(dict(stage_part_seconds=seconds)) + "\n")
            how = "was stopped before its end" if code == STOPPED else "failed"
            raise SystemExit(f"stage {how} (exit {code}): {' '.join(run)}; see {log_path}; `python experiment.py "
                             f"--resume` (with the same flags) continues it")
        log.write(json.dumps(dict(stage_wall_seconds=round(earlier + seconds, 1), command=cmd, code=code_version()))
                  + "\n")
    return stage_record(log_path)


def wait_passing_signals(proc) -> int:
    """Wait for a stage, passing SIGINT and SIGTERM on to it (a scheduler stopping the experiment
    stops the stage, which saves first; the experiment then ends when it has)."""
    passed = {sig: signal.signal(sig, lambda signum, frame: proc.send_signal(signum))
              for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for sig, handler in passed.items():
            signal.signal(sig, handler)


def finished_or_run(cmd: list[str], log_path: str, ckpt: str | None, keep: bool) -> tuple[dict, bool]:
    """(the stage's record, whether it ran now). With keep (--resume): a stage whose log is complete,
    was run by this same command and whose checkpoint (if any) is on disk is not run again; a stage
    this same command left unfinished with a checkpoint continues from it; anything else runs from
    scratch. A stage folder in use by a running stage (its lock held) is never touched."""
    if ckpt is not None and lock_held(ckpt):
        raise SystemExit(f"{ckpt} is in use by a running stage (its lock is held): wait for it to end or stop it, "
                         f"then run the experiment again")
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
    if keep and ckpt is not None and resumable(cmd, log_path, ckpt):
        print(f"resumed: {ckpt} continues from its checkpoint", flush=True)
        return run_stage(cmd, log_path, resume=True), True
    if ckpt is not None and os.path.exists(ckpt):
        if keep:
            print(f"rerun: {ckpt} has no checkpoint of this command to continue from; it is trained again", flush=True)
        shutil.rmtree(ckpt)  # a rerun starts the arm afresh
    return run_stage(cmd, log_path), True


def resumable(cmd: list[str], log_path: str, ckpt: str) -> bool:
    """Whether an unfinished stage of this very command left a checkpoint to continue from."""
    from comt.common import load_train_state
    started, _ = stage_parts(log_path)
    state = load_train_state(ckpt, mmap=True) if started == cmd and os.path.isdir(ckpt) else None
    return state is not None and state["step"] < state["args"]["steps"]


def eval_flags(args) -> list[str]:
    return QUICK["eval"] if args.quick else ["--n", str(args.eval_n)]


def base_rows(args, keep: bool, run: bool = True) -> tuple[dict, float]:
    """The base model evaluated from the gold plan, in its own plan form and from the question alone,
    once (greedy, so the same for every seed): ({row: {split: metrics}}, the seconds it took). Without
    `run` (--from-logs) they must be on disk, made by these commands."""
    rows, seconds = {}, 0.0
    for key, (_, flags) in rp.BASE_ROWS.items():
        path, log = os.path.join(args.out, f"{key}.json"), os.path.join(args.out, f"{key}.log")
        cmd = ["evaluate.py", "--ckpt", args.base, *flags, "--json", path, "--no-plots", *eval_flags(args)]
        record = finished_or_run(cmd, log, None, keep)[0] if run else logged_by(cmd, log)
        with open(path) as f:
            rows[key] = next(iter(json.load(f)["results"].values()))
        seconds += record["wall_seconds"]
    return rows, seconds


def logged_by(cmd: list[str], log: str) -> dict:
    """--from-logs: the record of a finished stage made by exactly `cmd` (else one line: nothing is
    run, so the results name what made them)."""
    record = stage_record(log)
    if record is None:
        raise SystemExit(f"--from-logs: {log} is missing or unfinished (run the experiment, or --resume it)")
    if record["stage_command"] != cmd:
        raise SystemExit(f"--from-logs: {log} was made by `{' '.join(record['stage_command'] or ['?'])}`, not by "
                         f"this command's flags (`{' '.join(cmd)}`); give the flags the run had (--arms, --sft-steps, "
                         f"--rl-steps, --eval-n, --val-n, --val-every, --base, --quick)")
    return record


def runs_from_logs(args) -> list[dict]:
    """The per-seed records of a finished run, from its logs and eval.json files, each made by the
    command this run's flags make."""
    per_seed = []
    for seed in args.seeds:
        root = os.path.join(args.out, f"seed{seed}")
        stages = {arm: logged_by(stage_command(args, seed, arm), os.path.join(root, f"{arm}.log")) for arm in args.arms}
        stages["eval"] = logged_by(eval_command(args, seed), os.path.join(root, "eval.log"))
        with open(os.path.join(root, "eval.json")) as f:
            per_seed.append(dict(seed=seed, stages=stages, eval=json.load(f)["results"]))
    return per_seed


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
            for k in ("sup_tokens", "sup_tokens_per_example", "train_tokens", "forward_tokens", "train_seconds",
                      "wall_seconds", "cpu_wait_share", "shared_machine"):
                c.setdefault(k, []).append(s.get(k, 0 if k == "forward_tokens" else None))
    return dict(eval=evals, costs=costs)


# -----------------------------------------------------------------------------
# The report: an example of what post-training lost, the README block, the files


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


def update_readme(md: str, path: str = "README.md", start: str = "<!-- results:start -->",
                  end: str = "<!-- results:end -->") -> bool:
    """Put the result tables between the README's markers; False when it has none."""
    if not os.path.isfile(path):
        return False
    text = open(path).read()
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    with replacing(path) as f:
        f.write(head + start + "\n" + md + rest[rest.index(end):])
    return True


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Six arms (SFT target x RL reward) x seeds from one base, then "
                                 "evaluate.py on all of them.",
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
    ap.add_argument("--val-n", type=NONNEG_INT, default=VAL_N, help="val problems of each check during training "
                    "(the cost-to-accuracy curves; 0: none)")
    ap.add_argument("--val-every", type=COUNT, default=VAL_EVERY, help="steps between those checks, in every stage")
    ap.add_argument("--resume", action="store_true", help="keep the stages of an earlier run in --out that finished "
                    "(complete log and checkpoint), continue one stopped part-way from its checkpoint, and run the "
                    "rest: continues an interrupted experiment")
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
                              ("--eval-n", args.eval_n != EVAL_N), ("--val-n", args.val_n != VAL_N),
                              ("--val-every", args.val_every != VAL_EVERY)) if v]
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
    base_summary = read_build(args.base)  # (a malformed one is one line, before any work)
    if args.from_logs:
        per_seed = runs_from_logs(args)
        base, seconds = base_rows(args, keep=True, run=False)
        return finish(args, per_seed, base, base_summary, command, total_wall(per_seed) + seconds)
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
        stages["eval"], _ = finished_or_run(eval_command(args, seed), os.path.join(root, "eval.log"), None,
                                            args.resume and not ran)
        with open(os.path.join(root, "eval.json")) as f:
            per_seed.append(dict(seed=seed, stages=stages, eval=json.load(f)["results"]))
    finish(args, per_seed, base, base_summary, command, total_wall(per_seed) + base_seconds)


def eval_command(args, seed: int) -> list[str]:
    """evaluate.py on every arm of a seed (the first seed's also draws the reliability diagrams)."""
    root = os.path.join(args.out, f"seed{seed}")
    return ["evaluate.py", "--ckpt", *(os.path.join(root, a) for a in args.arms), "--json",
            os.path.join(root, "eval.json"), *eval_flags(args), *([] if seed == args.seeds[0] else ["--no-plots"])]


def stage_command(args, seed: int, arm: str) -> list[str]:
    """The command of one arm's stage in one seed: the README's, with the budget flags given and its
    checks on `val` (evaluate.py measures every arm on `test` and the OOD splits afterwards)."""
    script, flags, parent = ARMS[arm]
    root = os.path.join(args.out, f"seed{seed}")
    src = ["--model", args.base] if parent is None else ["--init", os.path.join(root, parent)]
    steps = args.sft_steps if parent is None else args.rl_steps
    checks = ["--eval-split", "val", "--eval-n", str(args.val_n), "--eval-every", str(args.val_every)]
    budget = QUICK["sft" if parent is None else "rl"] if args.quick else ["--steps", str(steps)] * bool(steps) + checks
    return [script, *flags, *src, "--out", os.path.join(root, arm), "--seed", str(seed), *budget]


def produced_by(args) -> str:
    """The command that made these numbers: every flag that shapes them (--resume, --from-logs and
    where the files go change nothing in them)."""
    extra = [" --quick"] * args.quick
    extra += [" --seeds " + " ".join(map(str, args.seeds))] * (not args.quick and args.seeds != [0, 1, 2])
    extra += [" --arms " + " ".join(args.arms)] * (args.arms != DEFAULT_ARMS)
    extra += [f" --sft-steps {args.sft_steps}"] * bool(args.sft_steps) + [f" --rl-steps {args.rl_steps}"] * bool(args.rl_steps)
    extra += [f" --eval-n {args.eval_n}"] * (args.eval_n != EVAL_N and not args.quick)
    extra += [f" --val-n {args.val_n}"] * (args.val_n != VAL_N and not args.quick)
    extra += [f" --val-every {args.val_every}"] * (args.val_every != VAL_EVERY and not args.quick)
    extra += [f" --base {args.base}"] * (args.base != DEFAULT_BASE and not args.quick)
    return "python experiment.py" + "".join(extra)


def total_wall(per_seed: list[dict]) -> float:
    """Seconds the stages and evaluations took, summed (the same whether or not the run was resumed)."""
    return sum(s["wall_seconds"] for run in per_seed for s in run["stages"].values())


def finish(args, per_seed: list[dict], base: dict, base_summary: dict, command: str, total_seconds: float):
    """Pool the OOD splits, aggregate over seeds, compute the claims and the pipelines' cost curves,
    write --results .md/.json and the PNGs (accuracy by split, `val` accuracy against tokens, the first
    seed's reliability diagrams), print the tables."""
    pooled = [dict(run, eval={arm: pool_ood(m) for arm, m in run["eval"].items()}) for run in per_seed]
    base_rows_pooled = {row: pool_ood(m) for row, m in base.items()}
    agg = aggregate(pooled)
    splits = list(next(iter(agg["eval"].values())))
    found = claims(pooled, splits)
    parents = {arm: parent for arm, (_, _, parent) in ARMS.items()}
    curves = {arm: [rp.pipeline_curve(run["stages"], arm, parents) for run in per_seed] for arm in args.arms}
    shared = {arm: [rp.pipeline_shared(run["stages"], arm, parents) for run in per_seed] for arm in args.arms}
    md, readme = rp.documents(agg, base_rows_pooled, found, args.seeds, command, curves, shared,
                              loss_example(args, per_seed[0], base))
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    with replacing(args.results + ".md") as f:
        f.write(md)
    write_json(dict(command=command, seeds=args.seeds, base_build=base_summary, base=base, claims=found,
                    curves=curves, runs=per_seed, aggregate=agg, total_seconds=round(total_seconds, 1)),
               args.results + ".json")
    rp.accuracy_chart(agg["eval"], base_rows_pooled, args.results + "_accuracy.png")
    if any(c for per in curves.values() for c in per):
        rp.cost_chart(curves, args.results + "_cost.png")
    first = os.path.join(args.out, f"seed{args.seeds[0]}", "eval_reliability.png")
    if os.path.isfile(first):
        with open(first, "rb") as src, replacing(args.results + "_reliability.png", "wb") as dst:
            dst.write(src.read())
    if args.update_readme:
        update_readme(readme)
    print(md)
    print(json.dumps(dict(summary=True, results=args.results + ".md", seeds=len(args.seeds),
                          total_seconds=round(total_seconds, 1))))


if __name__ == "__main__":
    main()
