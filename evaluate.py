"""
Evaluate checkpoints side by side, in and out of distribution: accuracy and calibration.

    python evaluate.py --ckpt runs/sft_comt runs/ccrl                   # embedded test + OOD splits
    python evaluate.py --ckpt runs/sft_cot runs/grpo --splits test,ood_steps --n 500 --json runs/cot.json
    python evaluate.py --ckpt runs/smol --data gsm8k,svamp --n 100 --samples 8   # real benchmarks

Every checkpoint answers every problem greedily (the engine, batched); the problems are loaded
once and shared by all checkpoints. Per checkpoint x split:

  acc, acc_lenient    answer on the final `Answer:`/`####` line (strict), or else the last number in
                      the completion (lenient); small models' gains are often format, so both
  pass@k              with --samples k: k completions at --temperature per problem, the unbiased
                      estimator 1 - C(n-c, k) / C(n, k) (n samples, c right); pass@1 alongside
  tokens              mean generated tokens
  plan_rate           share of completions that open with a digit-free plan, then "Solution:"
  answer calibration  confidence of the answer = aggregate (--conf-agg) of the probabilities of
                      its number's tokens (0 when there is no number), against strict correctness:
                      ECE (--bins equal-width bins), Brier score, AUROC (ties count one half)
  step calibration    the same for every `expr = result` step; a step is right when its result is
                      a gold intermediate value (problems that have them) or else when its
                      arithmetic recomputes (--step-check)
  overconf_err        share of all steps that are wrong with confidence > --overconf-threshold
  first_wrong_conf    among wrong answers with a wrong step, the share whose first wrong step was
                      confident (> threshold): the overconfident mistake that cascades

  plan_correct        (synthetic splits) the plan's operator sequence is the gold program's (the
                      names it gives the results are not compared); plan_followed: the execution
                      carries out its own plan's steps, operator and named result (tasks.plan_verdict)
  wrong answers       (synthetic splits) split three ways, as shares of all problems (they add up
                      to 1 - acc): wrong_plan (a wrong or missing plan), not_followed (a right plan
                      the execution departs from), executed_wrongly (a right plan followed, a wrong
                      number somewhere)

With --gold-plan every prompt also holds the problem's gold plan and the "Solution:" marker (the
base model's ceiling: how well it executes a plan it is handed); the plan verdicts then judge the
execution against that plan.
With --own-plan FORM the prompt is the question under the base's own plan header instead
("Question: ...\nSteps:\n" for steps; corpus.OWN_FORMS), and only the plan it writes is judged:
plan_correct against the gold program (the base's planning ceiling; the post-training template is
never its own form).

Output: Markdown tables (accuracy, calibration, plans) on stdout; every number and, per problem,
what the experiment's intervals resample (right or wrong, steps, overconfident steps, each step's
confidence and whether it is right, plan verdicts) in --json; next to it <stem>_reliability.png (answer- and step-level reliability
diagrams, one column per split) and <stem>_accuracy.png (accuracy by split). With
--show N: the first N problems of every split with each checkpoint's completion, every numeric
step marked by its confidence and right/wrong, the verdict, the plan verdicts and the reward parts
(the checkpoint's own reward, which a ccrl.py run saves with its arguments; ccrl.py's defaults,
said so, for a checkpoint without one; colours on a terminal, `21[0.97 ✗]` marks otherwise), also as
<stem>_examples.html (comt/show.py). Problems too long for a model's context are skipped with a count
(`skipped` in the JSON).
"""
import argparse
import math
import os
import sys
import time
from dataclasses import fields, replace

from comt.benchmarks import load_problems
from comt.common import (check_checkpoint, checkpoint_id, code_version, load_model, load_train_state, log_json, pad_id,
                         pick_device, pyplot, replacing, save_figure, unwritable, write_json)
from comt.corpus import OWN_FORMS
from comt.engine import Engine, stop_ids
from comt.evaluation import (auroc, brier, ece, greedy_judgements, own_plan_judgements, pass_at_k, prompt_ids,
                             reliability)
from comt.flags import COUNT, NONNEG_INT, POSITIVE, SEED, SHARE, add_flags, from_flags
from comt.show import Example, html_page, render_text, visible
from comt.tasks import SPLITS, WRONG_KINDS, comt_target, plan_verdict, prompts_that_fit
from rewards import Judgement, RewardSettings, judge_completion, step_stats


def planned_text(text: str, p, args) -> str:
    """The text whose plan the plan verdicts read: the completion, after the gold plan with --gold-plan."""
    return comt_target(p) + text if getattr(args, "gold_plan", False) else text


def record_of(j: Judgement, verdict: dict | None) -> dict:
    """What the tables and the experiment's intervals read of one judged completion."""
    return dict(ok=j.correct, ok_lenient=j.correct_lenient, tokens=j.tokens, plan=j.plan, conf=j.answer_conf,
                step_confs=j.step_confs, step_rights=j.step_rights, **(verdict or {}))


def checkpoint_reward(ckpt: str) -> RewardSettings | None:
    """The reward a checkpoint was trained with (the flags its ccrl.py run saved); None for one that
    records none (a base, a stage-1 run, a downloaded model). A flag the run predates takes ccrl.py's
    default, said on stderr; a recorded value ccrl.py would not take is one line."""
    state = load_train_state(ckpt, mmap=True)
    flags = state["args"] if state else {}
    if not state or (state.get("script") != "ccrl.py" and "conf_weight" not in flags):
        return None
    older = [f for f in fields(RewardSettings) if f.name not in flags]
    for f in fields(RewardSettings):
        value, kind = flags.get(f.name, f.default), f.metadata.get("type")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        try:
            ok = value in f.metadata["choices"] if "choices" in f.metadata else number and kind(str(value)) == value
        except (argparse.ArgumentTypeError, TypeError):
            ok = False
        if not ok:
            raise SystemExit(f"--ckpt {ckpt}: its recorded --{f.name.replace('_', '-')} {value!r} is not a value ccrl.py "
                             f"takes ({', '.join(f.metadata['choices']) if 'choices' in f.metadata else 'a number >= 0'})")
    if older:
        print(f"--ckpt {ckpt}: saved before {', '.join('--' + f.name.replace('_', '-') for f in older)} existed: judged "
              f"with ccrl.py's default{'s' * (len(older) > 1)} ("
              + ", ".join(f"--{f.name.replace('_', '-')} {f.default}" for f in older) + ")", file=sys.stderr)
    return from_flags(RewardSettings, flags)


def reward_flags(scoring: RewardSettings | None) -> str:
    """The reward a checkpoint is judged with, as ccrl.py's flags (every switch)."""
    if scoring is None:
        return "records no reward (not a ccrl.py run): shown at ccrl.py's defaults"
    return "trained with " + " ".join(f"--{f.name.replace('_', '-')} {getattr(scoring, f.name)}"
                                      for f in fields(RewardSettings))


def run_split(engine, tok, problems, args, name: str, split: str,
              own: RewardSettings | None) -> tuple[list[dict], list[int]]:
    """Greedy records, one per problem, and with --samples k the right count of k samples each. The
    tables read each completion's confidences with --conf-agg and --step-check; the first --show
    records also hold the completion as a show.Example judged with the checkpoint's own reward, every
    switch included (`own`; ccrl.py's defaults where it records none)."""
    shown_with = own or RewardSettings()
    scoring = replace(shown_with, conf_agg=args.conf_agg, step_check=args.step_check)
    gold_plan = getattr(args, "gold_plan", False)
    judged = greedy_judgements(engine, tok, problems, args.max_new_tokens, gold_plan, args.batch, f"{name} {split}",
                               scoring)
    shown = judged[:args.show] if shown_with == scoring else greedy_judgements(
        engine, tok, problems[:args.show], args.max_new_tokens, gold_plan, args.batch, scoring=shown_with)
    records = []
    for i, (j, p) in enumerate(zip(judged, problems)):
        verdict = plan_verdict(planned_text(j.text, p, args), p, j.correct)
        records.append(record_of(j, verdict))
        if i < args.show:
            records[-1]["example"] = Example(name, p.question, p.answer, shown[i], verdict, unrecorded=own is None)
    return records, sampled_right_counts(engine, tok, problems, args, scoring) if args.samples > 1 else []


def sampled_right_counts(engine, tok, problems, args, scoring: RewardSettings) -> list[int]:
    """--samples k: how many of k completions at --temperature answer each problem right (pass@k)."""
    k, stops, counts = args.samples, stop_ids(tok, engine.model), []
    prompts = [prompt_ids(tok, p, getattr(args, "gold_plan", False)) for p in problems]
    for i in range(0, len(prompts), args.batch):
        s = engine.generate(prompts[i:i + args.batch], num_samples=k, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, stop_tokens=stops, seed=args.seed + i)
        for r, p in enumerate(problems[i:i + args.batch]):
            counts.append(sum(judge_completion(tok, *s.completion(j), p, scoring).correct
                              for j in range(r * k, (r + 1) * k)))
    return counts


def own_plan_summary(judged: list[dict]) -> dict:
    """The metrics of one checkpoint x split under --own-plan: plan_correct (share of the problems), the
    mean number of steps written in the form, and per problem what the intervals resample."""
    right = [j["plan_correct"] for j in judged]
    return dict(n=len(judged), plan_correct=sum(right) / len(right),
                plan_steps=sum(j["steps"] for j in judged) / len(judged), per_problem=dict(plan_correct=right))


def summarise(records: list[dict], right_counts: list[int], args) -> dict:
    """The metrics of one checkpoint x split (see the header); nan where a metric has nothing to measure."""
    n = len(records)
    ok = [r["ok"] for r in records]
    confs = [r["conf"] for r in records]
    step_c = [c for r in records for c in r["step_confs"]]
    step_z = [z for r in records for z in r["step_rights"]]
    first_wrong = [next(c for c, z in zip(r["step_confs"], r["step_rights"]) if not z)
                   for r in records if not r["ok"] and not all(r["step_rights"])]
    out = dict(n=n, acc=sum(ok) / n, acc_lenient=sum(r["ok_lenient"] for r in records) / n,
               tokens=sum(r["tokens"] for r in records) / n, plan_rate=sum(r["plan"] for r in records) / n,
               ece=ece(confs, ok, args.bins), brier=brier(confs, ok), auroc=auroc(confs, ok),
               steps=len(step_c), step_acc=sum(step_z) / len(step_z) if step_z else float("nan"),
               step_ece=ece(step_c, step_z, args.bins), step_brier=brier(step_c, step_z),
               step_auroc=auroc(step_c, step_z),
               overconf_err=step_stats([r["step_confs"] for r in records], [r["step_rights"] for r in records],
                                       args.overconf_threshold)["overconf_err"],
               first_wrong_conf=(sum(c > args.overconf_threshold for c in first_wrong) / len(first_wrong)
                                 if first_wrong else float("nan")))
    out.update(plan_summary(records))
    out["per_problem"] = dict(ok=[int(r["ok"]) for r in records], steps=[len(r["step_rights"]) for r in records],
                              overconf=[overconfident_steps(r, args.overconf_threshold) for r in records],
                              step_confs=[[round(c, 6) for c in r["step_confs"]] for r in records],
                              step_rights=[[int(z) for z in r["step_rights"]] for r in records],
                              **{k: [r.get(k) for r in records] for k in ("plan_correct", "plan_followed")})
    if right_counts:
        k = args.samples
        out[f"pass@{k}"] = sum(pass_at_k(k, c, k) for c in right_counts) / n
        out["pass@1"] = sum(pass_at_k(k, c, 1) for c in right_counts) / n
    return out


def overconfident_steps(r: dict, threshold: float) -> int:
    """The record's wrong steps written with confidence above the threshold."""
    return sum(c > threshold and not z for c, z in zip(r["step_confs"], r["step_rights"]))


WRONG_KEYS = dict(zip(WRONG_KINDS, ("wrong_plan", "not_followed", "executed_wrongly")))


def plan_summary(records: list[dict]) -> dict:
    """plan_correct and plan_followed (shares of the problems) and the wrong answers split three ways
    (shares of all problems); nan for problems without a program.

    >>> r = [dict(plan_correct=True, plan_followed=True, wrong_kind=None),
    ...      dict(plan_correct=False, plan_followed=True, wrong_kind="wrong plan"),
    ...      dict(plan_correct=True, plan_followed=False, wrong_kind="plan not followed"),
    ...      dict(plan_correct=True, plan_followed=True, wrong_kind="executed wrongly")]
    >>> plan_summary(r)
    {'plan_correct': 0.75, 'plan_followed': 0.75, 'wrong_plan': 0.25, 'not_followed': 0.25, 'executed_wrongly': 0.25}
    """
    judged = [r for r in records if r.get("plan_correct") is not None]
    if not judged:
        return dict(plan_correct=float("nan"), plan_followed=float("nan"), **{k: float("nan") for k in WRONG_KEYS.values()})
    n = len(judged)
    out = dict(plan_correct=sum(r["plan_correct"] for r in judged) / n,
               plan_followed=sum(r["plan_followed"] for r in judged) / n)
    return out | {key: sum(r["wrong_kind"] == kind for r in judged) / n for kind, key in WRONG_KEYS.items()}


# -----------------------------------------------------------------------------
# Report


def fmt(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}" if isinstance(x, float) else str(x)


def markdown_tables(results: dict) -> str:
    """Accuracy (strict, lenient in brackets) checkpoints x splits, then calibration rows."""
    splits = list(next(iter(results.values())))
    lines = ["| checkpoint | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
    for ck, per in results.items():
        lines.append(f"| {ck} | " + " | ".join(f"{fmt(m['acc'])} ({fmt(m['acc_lenient'])})" for m in per.values()) + " |")
    cols = ["tokens", "plan_rate", "ece", "brier", "auroc", "step_acc", "step_ece", "overconf_err", "first_wrong_conf"]
    extra = [c for c in next(iter(next(iter(results.values())).values())) if c.startswith("pass@")]
    lines += ["", "| checkpoint | split | " + " | ".join(cols + extra) + " |", "|---" * (len(cols + extra) + 2) + "|"]
    for ck, per in results.items():
        for split, m in per.items():
            lines.append(f"| {ck} | {split} | " + " | ".join(fmt(m[c]) for c in cols + extra) + " |")
    plans = ["plan_correct", "plan_followed", *WRONG_KEYS.values()]
    lines += ["", "| checkpoint | split | " + " | ".join(plans) + " |", "|---" * (len(plans) + 2) + "|"]
    for ck, per in results.items():
        for split, m in per.items():
            lines.append(f"| {ck} | {split} | " + " | ".join(fmt(m[c]) for c in plans) + " |")
    return "\n".join(lines + skipped_note(results))


def skipped_note(results: dict) -> list[str]:
    """A line under the tables naming the problems left out (prompt + --max-new-tokens longer than a
    model's context), so that no table is read as covering them; [] when none was."""
    left = [f"{ck} {split}: {m['skipped']} of {m['n'] + m['skipped']}" for ck, per in results.items()
            for split, m in per.items() if m.get("skipped")]
    return ["", "Skipped, too long for the model's context (not in the tables above): " + "; ".join(left)] * bool(left)


def own_plan_table(results: dict) -> str:
    """--own-plan: plan correct, % (mean steps written in the form), checkpoints x splits."""
    splits = list(next(iter(results.values())))
    lines = ["| checkpoint, own plans: plan correct (steps) | " + " | ".join(splits) + " |",
             "|---" * (len(splits) + 1) + "|"]
    for ck, per in results.items():
        cells = [f"{fmt(m['plan_correct'])} ({m['plan_steps']:.1f})" for m in per.values()]
        lines.append(f"| {ck} | " + " | ".join(cells) + " |")
    return "\n".join(lines + skipped_note(results))


def plot(results: dict, curves: dict, bins: int, stem: str) -> list[str]:
    """<stem>_reliability.png (curves[level][split][checkpoint] = (confidences, rights): one panel per
    level and split) and <stem>_accuracy.png; returns their paths."""
    plt = pyplot()
    paths = [f"{stem}_reliability.png", f"{stem}_accuracy.png"]
    splits = list(next(iter(results.values())))
    colors = {ck: f"C{i}" for i, ck in enumerate(results)}  # the same colour for a checkpoint in every panel
    fig, axes = plt.subplots(2, len(splits), figsize=(3.2 * len(splits) + 0.6, 6.6), sharex=True, sharey=True,
                             squeeze=False)
    for row, level in enumerate(("answer", "step")):
        for col, split in enumerate(splits):
            reliability_panel(axes[row][col], curves[level][split], colors, bins, f"{split}: {level}s")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy in bin")
    for ax in axes[-1]:
        ax.set_xlabel("confidence (marker area: bin share)")
    fig.tight_layout()
    save_figure(fig, paths[0], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(splits)), 4))
    width = 0.8 / len(results)
    for j, (ck, per) in enumerate(results.items()):
        xs = [i + (j - (len(results) - 1) / 2) * width for i in range(len(splits))]
        ax.bar(xs, [per[s]["acc"] for s in splits], width, label=f"{ck} strict")
        ax.scatter(xs, [per[s]["acc_lenient"] for s in splits], marker="_", s=200, color="black",
                   label="lenient" if j == 0 else None, zorder=3)
    ax.set_xticks(range(len(splits)), splits, rotation=20)
    ax.set(ylabel="greedy accuracy", ylim=(0, 1), title="accuracy by split")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, paths[1], dpi=120)
    plt.close(fig)
    return paths


def reliability_panel(ax, per_ckpt: dict, colors: dict, bins: int, title: str):
    """One reliability diagram: accuracy against mean confidence per bin, one curve per checkpoint."""
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":")
    for ck, (confs, right) in per_ckpt.items():
        rel = reliability(confs, right, bins)
        if not rel:
            ax.plot([], [], color=colors[ck], label=f"{ck}: none")
            continue
        xs, ys = [b[4] for b in rel], [b[3] for b in rel]
        ax.plot(xs, ys, color=colors[ck], label=f"{ck}: ECE {ece(confs, right, bins):.2f}, n={len(confs)}")
        ax.scatter(xs, ys, s=[6 + 150 * b[2] / len(confs) for b in rel], color=colors[ck], zorder=3)
    ax.set(title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.title.set_fontsize(9)
    ax.legend(fontsize=6, loc="upper left")


# -----------------------------------------------------------------------------
# Main


def show_examples(shown: dict, rewards: dict, images: list[str], path: str) -> str:
    """Print the --show examples (the same problems for every checkpoint), after the reward each
    checkpoint is judged with (`rewards`: name -> its flags, reward_flags), and write them as an HTML
    page with the plots; returns its path."""
    ansi = sys.stdout.isatty()
    notes = [f"{name}: {flags}" for name, flags in rewards.items()]
    print("\n".join(notes))
    blocks = []
    for split, per_ckpt in shown.items():
        for i, exs in enumerate(zip(*per_ckpt)):
            print(f"\n=== {split}, problem {i + 1}: {visible(exs[0].question)}")
            for e in exs:
                print(render_text(e, ansi))
            blocks.append((split, exs[0].question, list(exs)))
    with replacing(path) as f:
        f.write(html_page("Confidence on every numeric step", blocks, images, notes))
    return path


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Evaluate checkpoints: accuracy and calibration by split.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--ckpt", nargs="+", required=True, help="checkpoint directories (Hugging Face format)")
    ap.add_argument("--splits", default=",".join(s for s in SPLITS if s not in ("train", "val")),
                    help="synthetic splits, comma-separated (ignored with --data; val is the split to choose "
                    "settings on)")
    ap.add_argument("--data", default=None, help="real data instead, comma-separated: benchmark names (gsm8k, "
                    "svamp, gsm8k:test, ...), JSONL paths or hub:NAME[:CONFIG]:SPLIT")
    ap.add_argument("--n", type=NONNEG_INT, default=200, help="problems per split (real data: the first N; 0 = all)")
    ap.add_argument("--seed", type=SEED, default=0, help="seed of the synthetic problems and of sampling")
    ap.add_argument("--max-new-tokens", type=COUNT, default=320, help="completion length limit (the longest "
                    "default OOD response, plan included, is about 300 tokens)")
    ap.add_argument("--batch", type=COUNT, default=64, help="prompts per engine call")
    ap.add_argument("--samples", type=COUNT, default=1, help="k for pass@k (k sampled completions per problem; 1: off)")
    ap.add_argument("--temperature", type=POSITIVE, default=1.0, help="sampling temperature for pass@k")
    add_flags(ap, RewardSettings, only=("conf_agg", "step_check"))  # (ccrl.py's, as its reward reads them)
    ap.add_argument("--bins", type=COUNT, default=10, help="equal-width bins for ECE and the reliability diagram")
    ap.add_argument("--overconf-threshold", type=SHARE, default=0.9, help="confidence above which a wrong step "
                    "is overconfident")
    ap.add_argument("--json", default="runs/eval.json", help="where to write every number (PNGs go next to it)")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    ap.add_argument("--show", type=NONNEG_INT, default=0, help="print N problems per split with every checkpoint's "
                    "completion, each numeric step marked by confidence and right/wrong, and the reward parts; also "
                    "written to <json stem>_examples.html with the plots")
    ap.add_argument("--gold-plan", action="store_true", help="prompt with the question, the problem's gold plan and "
                    "the 'Solution:' marker (how well a model executes a plan it is handed; synthetic splits)")
    ap.add_argument("--own-plan", choices=OWN_FORMS, default=None, help="prompt with the question under the base's own "
                    "plan header instead and judge only the plan it writes (plan_correct: the planning ceiling of a "
                    "base model; synthetic splits)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = ap.parse_args(argv)
    if args.own_plan and (args.gold_plan or args.data or args.samples > 1 or args.show):
        ap.error("--own-plan judges plans written on synthetic splits: not with --gold-plan, --data, --samples or "
                 "--show")
    for ck in args.ckpt:
        if not os.path.isfile(os.path.join(ck, "config.json")):
            ap.error(f"--ckpt {ck}: not a checkpoint directory (no config.json)")
    for flag, value in (("--data", args.data), ("--splits", args.splits)):
        if value is not None and not [s for s in value.split(",") if s.strip()]:
            ap.error(f"{flag} {value!r}: names nothing to evaluate")
    if args.n == 0 and not args.data:
        ap.error("--n 0 (every row) is for real data (--data); a synthetic split is generated: give --n a count")
    same = [ck for i, ck in enumerate(args.ckpt) if any(os.path.samefile(ck, other) for other in args.ckpt[:i])]
    if same:
        ap.error(f"--ckpt {same[0]}: given twice (the same checkpoint directory); give each checkpoint once")
    for path in written_files(args):  # before the evaluation, not after it
        if unwritable(path):
            ap.error(f"{path}: {unwritable(path)} (--json {args.json} puts it there)")
    return args


def written_files(args) -> list[str]:
    """Every file an evaluation writes: --json, and beside it the plots and the --show page."""
    stem = os.path.splitext(args.json)[0]
    plots = [] if args.no_plots or args.own_plan else [f"{stem}_reliability.png", f"{stem}_accuracy.png"]
    return [args.json, *plots, *[f"{stem}_examples.html"] * bool(args.show)]


def load_data(args) -> dict:
    """{split name: problems}, loaded once for all checkpoints."""
    specs = args.data.split(",") if args.data else args.splits.split(",")
    data = {}
    for spec in filter(None, (s.strip() for s in specs)):
        try:
            data[spec] = load_problems(spec, n=args.n or None, seed=args.seed)
        except (ValueError, FileNotFoundError) as e:
            raise SystemExit(f"{'--data' if args.data else '--splits'} {spec}: {e}") from None
        if not data[spec]:
            raise SystemExit(f"{spec}: no problems")
    if not data:
        raise SystemExit("nothing to evaluate: no splits given")
    return data


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    device = pick_device(args.device)
    data = load_data(args)
    toks = [check_checkpoint(ck, "--ckpt") for ck in args.ckpt]  # every one readable before any is run
    rewards = [checkpoint_reward(ck) for ck in args.ckpt]  # (read once: the training state may be large)
    results, seconds, shown = {}, {}, {}  # shown: split -> per checkpoint, its --show examples
    curves = {"answer": {s: {} for s in data}, "step": {s: {} for s in data}}  # level -> split -> ckpt -> points
    names = [os.path.basename(os.path.normpath(ck)) for ck in args.ckpt]
    if len(set(names)) < len(names):  # same folder names in different places: use the paths
        names = [os.path.normpath(ck) for ck in args.ckpt]
    for ck, name, tok, reward in zip(args.ckpt, names, toks, rewards):
        t1 = time.time()
        engine = Engine(load_model(ck, device=device).eval(), pad_id=pad_id(tok))
        results[name] = {}
        for split, problems in data.items():
            kept = prompts_that_fit(tok, problems, args.max_new_tokens, engine.model.config.max_position_embeddings,
                                    f"{split} problems")
            if args.own_plan:
                judged = own_plan_judgements(engine, tok, kept, args.max_new_tokens, args.own_plan, args.batch,
                                             f"{name} {split}")
                results[name][split] = dict(own_plan_summary(judged), skipped=len(problems) - len(kept))
                continue
            records, counts = run_split(engine, tok, kept, args, name, split, reward)
            shown.setdefault(split, []).append([r["example"] for r in records[:args.show]])
            results[name][split] = dict(summarise(records, counts, args), skipped=len(problems) - len(kept))
            curves["answer"][split][name] = ([r["conf"] for r in records], [r["ok"] for r in records])
            curves["step"][split][name] = ([c for r in records for c in r["step_confs"]],
                                           [z for r in records for z in r["step_rights"]])
        seconds[name] = round(time.time() - t1, 1)
    print(own_plan_table(results) if args.own_plan else markdown_tables(results))
    write_json(dict(args=vars(args), inputs={ck: checkpoint_id(ck) for ck in args.ckpt}, code=code_version(),
                    results=results, seconds=seconds), args.json)
    pngs = [] if args.no_plots or args.own_plan else plot(results, curves, args.bins, os.path.splitext(args.json)[0])
    page = show_examples(shown, {name: reward_flags(r) for name, r in zip(names, rewards)}, pngs,
                         os.path.splitext(args.json)[0] + "_examples.html") if args.show else None
    log_json(dict(summary=True, json=args.json, plots=pngs, examples=page, checkpoints=len(args.ckpt),
                  splits=len(data), problems=sum(len(p) for p in data.values()), seconds=round(time.time() - t0, 1)))


if __name__ == "__main__":
    main()
