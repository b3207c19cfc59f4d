"""
The experiment's results as a person reads them (experiment.py calls these): Markdown tables of arms
x splits (mean ± std over seeds), the paired differences with their intervals (comt/stats.py), the
reading claim by claim in the paper's terms (generated, so that a rerun cannot leave it behind), the
cost of each pipeline in tokens and seconds to reach a share of `val` (its curve: the SFT stage's
checks, then the RL stage's, counts carried over), and two charts (accuracy by
split; `val` accuracy against the tokens spent).

Arms are named <sft>_<rl>: cot_sft, comt_sft, and an RL arm from either (cot_grpo, comt_ccrl, ...);
`ev` is {arm: {split: {metric: [one value per seed]}}} in the order the arms ran.
"""
import statistics

from comt.stats import POOLED, is_ood, reading

BASE_ROWS = {  # evaluate.py runs of the base model: the key (its JSON in --out), the row label, the flags
    "base_plan": ("base, from the gold plan", ["--gold-plan"]),
    "base_own": ("base, its own plans (plan correct)", ["--own-plan", "steps"]),
    "base_plain": ("base, question only", []),
}
BASE_METRIC = {"base_own": "plan_correct"}  # what the own-plan row shows in the accuracy tables (it writes no answer)
NAMES = {"cot": "CoT-SFT", "comt": "CoMT-SFT", "grpo": "GRPO", "ccrl": "CCRL"}
REACH = (0.85, 0.90)  # the shares of `val` whose cost the cost table gives (stated before the run)


def label(arm: str) -> str:
    """'comt_ccrl' -> 'CoMT-SFT + CCRL', 'cot_sft' -> 'CoT-SFT'."""
    sft, rl = arm.split("_")
    return NAMES[sft] + ("" if rl == "sft" else f" + {NAMES[rl]}")


# -----------------------------------------------------------------------------
# Numbers


def measured(xs: list) -> list[float]:
    """The values that were measured: None and nan (nothing to measure, e.g. no wrong step) left out."""
    return [x for x in xs if x is not None and x == x]


def mean_std(xs: list[float]) -> tuple[float, float]:
    xs = measured(xs)
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def mean(xs: list) -> float:
    return mean_std(xs)[0]


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


def pts(x: float) -> str:
    return "–" if x != x else f"{100 * x:+.1f}"


def interval_text(c: dict) -> str:
    return f"{pts(c['mean'])} [{pts(c['low'])}, {pts(c['high'])}]"


def tokens_text(n: float) -> str:
    """1234567 -> '1.23M', 45600 -> '45.6k'."""
    return "–" if n != n else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else f"{n:.0f}"


def table_head(columns: list[str]) -> list[str]:
    """A Markdown table's header and separator lines."""
    return ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]


# -----------------------------------------------------------------------------
# Tables: accuracy, plans, the paired differences, what post-training kept


def accuracy_table(ev: dict, base: dict, splits: list[str], key: str = "acc") -> list[str]:
    lines = table_head(["arm", *splits])
    for row, (name, _) in BASE_ROWS.items():
        if row in base:
            k = BASE_METRIC.get(row, key)
            lines.append(f"| {name} | " + " | ".join(f"{100 * base[row][s][k]:.1f}" for s in splits) + " |")
    return lines + [f"| {arm} | " + " | ".join(pm(ev[arm][s][key]) for s in splits) + " |" for arm in ev]


def plan_tables(ev: dict, base: dict, splits: list[str]) -> tuple[list[str], list[str]]:
    """(plan correct / plan followed, the wrong answers split three ways), arms x splits."""
    head = table_head(["arm", *splits])
    one = lambda m, k: "–" if k not in m else f"{100 * (mean(m[k]) if isinstance(m[k], list) else m[k]):.0f}"
    rows = [(BASE_ROWS[r][0], base[r]) for r in ("base_plan", "base_own") if r in base] + list(ev.items())
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
    """The comparisons x splits: mean [95% interval], * where the interval excludes 0; – where a
    comparison is not read on a split."""
    out = table_head(["comparison", *splits])
    for what in dict.fromkeys(c["claim"] for c in found):
        cells = {c["split"]: c for c in found if c["claim"] == what}
        out.append(f"| {what} | " + " | ".join(
            "–" if s not in cells else interval_text(cells[s]) + ("*" if reading(cells[s]) in ("higher", "lower") else "")
            for s in splits) + " |")
    return out


def claims_table(found: list[dict], seeds: list[int]) -> list[str]:
    out = table_head(["comparison", "split", *(f"seed {k}" for k in seeds), "mean", "95% interval", "reading"])
    for c in found:
        out.append(f"| {c['claim']} | {c['split']} | " + " | ".join(map(pts, c["per_seed"]))
                   + f" | {pts(c['mean'])} | [{pts(c['low'])}, {pts(c['high'])}] | {reading(c)} |")
    return out


def kept_table(ev: dict, base: dict, splits: list[str]) -> list[str]:
    """For each OOD split, each arm's plans right as a share of the base's own-plan figure (what
    post-training kept of the base's planning) and its accuracy beside the base's from the gold plan."""
    ood = [s for s in splits if is_ood(s)]
    if "base_own" not in base or not ood:
        return []
    out = ["What post-training kept of the base's planning out of distribution: plans right, % of problems (in "
           "brackets: as a share of what the base plans right in its own words), then accuracy, %; means over "
           "seeds. The base's row: its own plans right / its accuracy from the gold plan", "",
           *table_head(["arm", *ood])]
    out.append("| base | " + " | ".join(f"{100 * base['base_own'][s]['plan_correct']:.0f} / "
                                      f"{100 * base['base_plan'][s]['acc']:.0f}" for s in ood) + " |")
    for arm in ev:
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
    out = []
    for s in (s for s in splits if is_ood(s) and "base_own" in base):
        own = base["base_own"][s]["plan_correct"]
        plans = {arm: mean(ev[arm][s]["plan_correct"]) for arm in ev}
        best, worst = max(plans, key=plans.get), min(plans, key=plans.get)
        out.append(f"- `{s}`: the base plans {100 * own:.0f}% right in its own words; the arms plan "
                   f"{100 * plans[worst]:.0f}-{100 * plans[best]:.0f}% right (most {best}, least {worst}): "
                   + ("every arm lost part of the base's planning." if plans[best] < own else
                      f"{best} kept all of it."))
    return out


# -----------------------------------------------------------------------------
# The reading, claim by claim in the paper's terms (generated from the paired differences)


def said(found: list[dict], key: str, metric: str, split: str, name: str | None = None) -> str | None:
    """'<name> +2.0 [+0.2, +4.0] (higher)' for one comparison, metric and split; None when not run."""
    c = next((c for c in found if (c["key"], c["metric"], c["split"]) == (key, metric, split)), None)
    return None if c is None else f"{name or c['claim'].split(',')[0]} {interval_text(c)} ({reading(c)})"


def claim_line(found: list[dict], metric: str, split: str) -> str:
    """The pipeline against its baseline, then the reward's effect from the same init, then the SFT
    target's effect under the same reward, as far as the arms that ran allow."""
    parts = [said(found, "pipeline", metric, split, "CoMT-SFT + CCRL minus CoT-SFT + GRPO")]
    reward = [said(found, k, metric, split, n) for k, n in (("reward_comt", "from CoMT-SFT"),
                                                           ("reward_cot", "from CoT-SFT"))]
    target = [said(found, k, metric, split, n) for k, n in (("target_ccrl", "then CCRL"), ("target_grpo", "then GRPO"),
                                                           ("target_sft", "stage 1 alone"))]
    if any(reward):
        parts.append("the reward from the same init, CCRL minus GRPO: " + ", ".join(filter(None, reward)))
    if any(target):
        parts.append("the SFT target under the same reward, CoMT-SFT minus CoT-SFT: " + ", ".join(filter(None, target)))
    return "; ".join(filter(None, parts))


def reward_line(found: list[dict], metric: str, split: str) -> str:
    """One calibration metric: the pipeline, then the reward's effect from each init, then CCRL's own gain."""
    parts = [said(found, k, metric, split, n) for k, n in (
        ("pipeline", "CoMT-SFT + CCRL minus CoT-SFT + GRPO"), ("reward_comt", "CCRL minus GRPO from CoMT-SFT"),
        ("reward_cot", "from CoT-SFT"), ("ccrl_gain", "CCRL minus its init"))]
    return ", ".join(filter(None, parts)) or "not run"


def reading_lines(found: list[dict], cost: list[str]) -> list[str]:
    """The paper's claims, one bullet each: accuracy in and out of distribution, overconfident errors
    as an error rate and as calibration, and the training cost (`cost`: cost_sentences)."""
    has = lambda split: any(c["split"] == split for c in found)
    out = ["What the default reproduces of the paper's claims, in its terms (generated: the mean difference over "
           "seeds in points, its 95% interval, and \"within noise\" where the interval covers 0):", ""]
    if has("test"):
        out.append("- **Accuracy in distribution** (`test`; the paper: CoMT + CCRL above CoT-SFT + RL, by 2.19 points "
                   "on average): " + claim_line(found, "acc", "test") + ".")
    if has(POOLED):
        out.append("- **Accuracy out of distribution** (the mean of the four OOD splits, as the paper averages its "
                   "OOD benchmarks; the paper: by 4.63 points): " + claim_line(found, "acc", POOLED) + ".")
    for split, where in (("test", "`test`"), (POOLED, "out of distribution (pooled)")):
        if any(c["split"] == split and c["metric"] == "step_auroc" for c in found):
            out.append(f"- **Overconfident errors, {where}** (the paper: fewer). As the error rate they mostly are "
                       "(a wrong step written with confidence > 0.9; nearly every step is written that sure): "
                       f"overconfident step errors {reward_line(found, 'overconf_err', split)}; all step errors "
                       f"{reward_line(found, 'step_err', split)}. As calibration proper: the confidence of wrong "
                       f"steps {reward_line(found, 'wrong_conf', split)}; step AUROC (does a step's confidence tell "
                       f"right from wrong; 50 is chance) {reward_line(found, 'step_auroc', split)}.")
    return out + ["- **Training cost** (the paper: about half the SFT tokens and 65-70% less training time): "
                  + " ".join(cost)] * bool(cost)


# -----------------------------------------------------------------------------
# Cost: tokens and seconds, and what they bought on `val`


def spent(stage: dict) -> dict:
    """What a finished stage spent, from its summary: tokens processed, of them trained, seconds."""
    train, forward = stage.get("train_tokens", 0), stage.get("forward_tokens", 0)
    return dict(tokens=train + forward, train_tokens=train, seconds=stage.get("train_seconds", 0.0))


def pipeline_curve(stages: dict, arm: str, parents: dict) -> list[dict]:
    """The `val` checks of an arm's pipeline (its SFT stage's, then its own), each with the tokens
    processed and seconds of training spent up to it: an RL stage's counts start from its SFT stage's
    totals, and its check before the first step (the SFT stage's last model again) is left out."""
    parent = parents[arm]
    head = pipeline_curve(stages, parent, parents) if parent else []
    before = spent(stages[parent]) if parent else dict(tokens=0, train_tokens=0, seconds=0.0)
    own = [dict(step=p["step"], acc=p["acc"], stage=arm, train_tokens=before["train_tokens"] + p["train_tokens"],
                tokens=before["tokens"] + p["train_tokens"] + p["forward_tokens"],
                seconds=round(before["seconds"] + p["seconds"], 1))
           for p in stages[arm]["curve"] if not (parent and p["step"] == 0)]
    return head + own


def pipeline_shared(stages: dict, arm: str, parents: dict) -> bool:
    """Whether a stage of the arm's pipeline shared the machine (its seconds then mean little)."""
    parent = parents[arm]
    return bool(stages[arm].get("shared_machine")) or (parent is not None and pipeline_shared(stages, parent, parents))


def reach(curve: list[dict], share: float) -> dict | None:
    """The first point of a pipeline's `val` curve at or above `share`; None when it never gets there."""
    return next((p for p in curve if p["acc"] >= share), None)


def reach_table(curves: dict, shared: dict) -> list[str]:
    """Per pipeline and REACH share: tokens processed (trained + forward only), of them trained, and
    seconds of training until `val` first reached it, mean ± std over the seeds that reached it.
    curves[arm] = one curve per seed; shared[arm] = per seed, whether a stage of it shared the machine."""
    out = table_head(["pipeline", "share of `val`", "tokens processed", "of them trained", "training s",
                      "seeds that reached it"])
    for arm, per_seed in curves.items():
        for share in REACH:
            hits = [reach(c, share) for c in per_seed]
            got = [h for h in hits if h]
            cell = lambda k, f: f(mean([h[k] for h in got])) + (f" ± {f(statistics.stdev([h[k] for h in got]))}"
                                                                  if len(got) > 1 else "") if got else "–"
            flag = " (shared)" if any(s for h, s in zip(hits, shared[arm]) if h) else ""
            out.append(f"| {label(arm)} | {100 * share:.0f}% | {cell('tokens', tokens_text)} | "
                       f"{cell('train_tokens', tokens_text)} | {cell('seconds', lambda x: f'{x:,.0f}')}{flag} | "
                       f"{len(got)} of {len(hits)} |")
    return out


def cost_sentences(curves: dict, sup: dict, train: dict) -> list[str]:
    """The cost answer in words: the SFT tokens of the two targets (exact, per seed the same data
    sizes), then per REACH share the tokens each pipeline processed to first reach it.
    sup[arm] / train[arm]: the SFT arms' supervised / trained tokens per seed."""
    out = []
    if {"comt_sft", "cot_sft"} <= set(sup):
        a, b = mean(sup["comt_sft"]), mean(sup["cot_sft"])
        ta, tb = mean(train["comt_sft"]), mean(train["cot_sft"])
        out.append(f"stage 1 on CoMT targets supervises {a:,.0f} tokens against CoT's {b:,.0f} ({a / b - 1:+.0%}; "
                   f"exact counts, replay excluded) and runs {tokens_text(ta)} tokens through training against "
                   f"{tokens_text(tb)} ({ta / tb - 1:+.0%}; replay included).")
    for share in REACH:
        got = {arm: [h["tokens"] for h in map(lambda c: reach(c, share), per_seed) if h]
               for arm, per_seed in curves.items() if "_sft" not in arm}
        parts = [f"{label(arm)} {tokens_text(mean(v))} ({len(v)} of {len(curves[arm])} seeds)" if v else
                 f"{label(arm)} in none of {len(curves[arm])} seeds" for arm, v in got.items()]
        if parts:
            out.append(f"Tokens processed until `val` first reached {100 * share:.0f}%: " + ", ".join(parts) + ".")
    return out


def cost_table(costs: dict) -> list[str]:
    """Per arm, its own stage: supervised tokens (SFT), tokens trained and forward only, seconds of its
    steps and of the whole stage, and how many of its seeds shared the machine."""
    out = ["Cost per stage (this arm's own stage; RL arms add their SFT's). Tokens are exact counts: supervised "
           "(the SFT data's own; replay is the same in both SFT arms), trained (through a forward and backward "
           "pass), forward only (sampling: prompts once, sampled tokens; old and reference log-probs). Seconds "
           "are as measured; \"shared\" counts the seeds in which the stage's threads waited for a core more than "
           "10% of their time (the kernel's run-queue delay: another job on the cores)", "",
           *table_head(["arm", "supervised tokens", "trained tokens", "forward-only tokens", "train s", "wall s",
                        "shared"])]
    for arm, c in costs.items():
        shared = measured(c.get("shared_machine", []))
        out.append(f"| {arm} | {pm(c['sup_tokens'], 1, 0)} | {pm(c['train_tokens'], 1, 0)} | "
                   f"{pm(c['forward_tokens'], 1, 0)} | {pm(c['train_seconds'], 1)} | {pm(c['wall_seconds'], 1)} | "
                   f"{sum(map(bool, shared))} of {len(c['wall_seconds'])} |")
    return out


# -----------------------------------------------------------------------------
# Charts

PALETTE = {"cot_sft": "#999999", "comt_sft": "#000000", "cot_grpo": "#E69F00", "comt_grpo": "#D55E00",
           "cot_ccrl": "#56B4E9", "comt_ccrl": "#0072B2"}  # Okabe-Ito: told apart without red/green


def accuracy_chart(ev: dict, base: dict, path: str):
    """Accuracy by split: each arm's mean over seeds with its std as an error bar, and the base
    model's ceilings (accuracy from the gold plan, plans right in its own form) and floor (question
    only) marked on every split."""
    from comt.common import pyplot, save_figure
    plt = pyplot()
    splits, arms = list(next(iter(ev.values()))), list(ev)
    fig, ax = plt.subplots(figsize=(max(8, 1.9 * len(splits)), 4.8))
    width = 0.8 / len(arms)
    for j, arm in enumerate(arms):
        xs = [i + (j - (len(arms) - 1) / 2) * width for i in range(len(splits))]
        stats = [mean_std(ev[arm][s]["acc"]) for s in splits]
        ax.bar(xs, [m for m, _ in stats], width, yerr=[sd for _, sd in stats], capsize=2, label=label(arm),
               color=PALETTE.get(arm), edgecolor="white", linewidth=0.5)
    for row, style in (("base_plan", dict(color="black", ls="-")), ("base_own", dict(color="black", ls=":")),
                       ("base_plain", dict(color="grey", ls="--"))):
        if row in base:
            for i, s in enumerate(splits):
                ax.hlines(base[row][s][BASE_METRIC.get(row, "acc")], i - 0.45, i + 0.45, lw=2,
                          label=BASE_ROWS[row][0] if i == 0 else None, **style)
    ax.set_xticks(range(len(splits)), splits, rotation=15)
    ax.set(ylabel="greedy accuracy (mean ± std over seeds)", ylim=(0, 1), title="Accuracy by split")
    ax.legend(fontsize=9, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.18))  # below: no ceiling hidden
    fig.tight_layout()
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def own_part(curve: list[dict], arm: str, curves: dict) -> list[dict]:
    """The checks of `arm`'s own stage, led by the last check before it, when the stages before it
    have a line of their own in `curves`; else the whole curve."""
    first = next((i for i, p in enumerate(curve) if p["stage"] == arm), 0)
    return curve[max(first - 1, 0):] if first and curve[first - 1]["stage"] in curves else curve


def cost_chart(curves: dict, path: str):
    """`val` accuracy against the tokens processed so far, one line per pipeline (the mean over seeds
    of each check's tokens and accuracy; faint: each seed), the REACH shares marked. A pipeline whose
    SFT stage has its own line is drawn from that stage's last check on (the SFT line shows the rest)."""
    from comt.common import pyplot, save_figure
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 5))
    for arm, per_seed in curves.items():
        style = dict(color=PALETTE.get(arm), ls="-" if arm.startswith("comt") else "--")
        per_seed = [own_part(c, arm, curves) for c in per_seed]
        for c in per_seed:
            ax.plot([p["tokens"] for p in c], [p["acc"] for p in c], alpha=0.2, lw=1, **style)
        n = min(map(len, per_seed))
        ax.plot([mean([c[i]["tokens"] for c in per_seed]) for i in range(n)],
                [mean([c[i]["acc"] for c in per_seed]) for i in range(n)], marker="o", ms=3, lw=2, label=label(arm),
                **style)
    for share in REACH:
        ax.axhline(share, color="grey", lw=0.8, ls=":")
        ax.annotate(f"{100 * share:.0f}%", (1, share), xycoords=("axes fraction", "data"), fontsize=9,
                    color="grey", xytext=(3, -3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set(xlabel="tokens processed so far (trained + forward only; log scale)",
           ylabel="greedy accuracy on val", ylim=(0, 1),
           title="What training bought: val accuracy against tokens (stage 1, then stage 2)")
    ax.legend(fontsize=9, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


# -----------------------------------------------------------------------------
# The two documents


HOW = ("a 95% interval from 10,000 hierarchical bootstrap resamples: the seeds drawn with replacement, then the "
       "problems within each (`comt/stats.py`); it counts seed-to-seed variation, so with three seeds it is wide")


def documents(agg: dict, base: dict, found: list[dict], seeds: list[int], command: str, curves: dict, shared: dict,
              example: list[str] = ()) -> tuple[str, str]:
    """(the full results Markdown, the block the README shows: accuracy, the paired differences in
    accuracy, the reading, the cost to reach a share of `val`, what post-training kept of the base's
    planning, a marked example of a loss; the rest only in the full Markdown)."""
    ev, costs = agg["eval"], agg["costs"]
    splits = list(next(iter(ev.values())))
    head = [f"Produced by `{command}` ({len(seeds)} seed(s): {', '.join(map(str, seeds))})"
            + ("; mean ± std over seeds." if len(seeds) > 1 else "."), ""]
    acc = ["Greedy accuracy, % (strict: the `Answer:` line); `ood_pooled` is the mean of the four OOD splits. The "
           "base rows are the shipped base model, greedy, so the same in every seed: from the gold plan (the ceiling "
           "execution allows), its own plans (the share it plans right in its own words: the planning ceiling) and "
           "from the question alone under the post-training prompt (the floor)", ""] + accuracy_table(ev, base, splits)
    by_metric = lambda pick: [c for c in found if pick(c["metric"])]
    sure = [f"Paired differences in accuracy, percentage points: the mean over seeds and {HOW}; * where the interval "
            "excludes 0 (elsewhere the difference is within noise)", ""] + claims_grid(by_metric("acc".__eq__), splits)
    if not found:
        sure = ["No paired differences: the arms run hold none of the compared pairs (`comt/stats.py`: COMPARISONS)"]
    calib = ["Paired differences in errors and calibration, points (AUROC: x100): overconfident step errors (wrong "
             "steps written with confidence > 0.9, % of steps), all step errors, the mean confidence of wrong steps, "
             "and step AUROC (the chance that a right step is written with more confidence than a wrong one); * "
             "where the interval excludes 0", ""] + claims_grid(by_metric("acc".__ne__), splits)
    sup = {arm: c["sup_tokens"] for arm, c in costs.items() if arm.endswith("_sft")}
    train = {arm: c["train_tokens"] for arm, c in costs.items() if arm.endswith("_sft")}
    cost = ["Cost to accuracy: tokens processed (trained + forward only) and seconds of training from the base "
            f"until `val` first reached {' and '.join(f'{100 * r:.0f}%' for r in REACH)} (greedy checks during "
            "training; a pipeline counts its SFT stage's cost, then its RL stage's); \"(shared)\" where a stage of "
            "it shared the machine in a seed that reached it. The checks' curves: `results/default_cost.png`", "",
            *reach_table(curves, shared)] if any(c for per in curves.values() for c in per) else []
    plans, wrong = plan_tables(ev, base, splits)
    kept = kept_table(ev, base, splits)
    readme = head + acc + [""] + sure + [""] + reading_lines(found, cost_sentences(curves, sup, train) if cost else [])
    readme += ([""] + cost if cost else []) + ([""] + kept + [""] + kept_sentences(ev, base, splits) if kept else [])
    if example:
        readme += ["", *example]
    full = readme + ["", *cost_table(costs), "", *calib, "", *plans, ""] + extra_tables(ev, found, seeds) + ["", *wrong]
    return "\n".join(full) + "\n", "\n".join(readme) + "\n"


def extra_tables(ev: dict, found: list[dict], seeds: list[int]) -> list[str]:
    """What results/default.md holds beyond the README's block and the tables above."""
    splits = list(next(iter(ev.values())))
    overconf = ["Overconfident step errors by split, % of steps (wrong steps written with confidence > 0.9)", "",
                *table_head(["arm", *splits])]
    overconf += [f"| {arm} | " + " | ".join(pm(ev[arm][s]["overconf_err"]) for s in splits) + " |" for arm in ev]
    calib = ["Calibration and format on `test`, %: answer ECE, step accuracy, overconfident step errors, wrong "
             "answers whose first wrong step was confident, step AUROC, outputs that open with a digit-free plan", "",
             *table_head(["arm", "answer ECE", "step acc", "overconf err", "first wrong step confident", "step AUROC",
                          "plan rate"])]
    calib += [f"| {arm} | " + " | ".join(pm(ev[arm]["test"][k]) for k in (
        "ece", "step_acc", "overconf_err", "first_wrong_conf", "step_auroc", "plan_rate")) + " |"
        for arm in ev if "test" in ev[arm]]
    out = overconf + [""] + calib
    out += ["", f"The paired differences per seed, with their mean and {HOW}", "", *claims_table(found, seeds)] * bool(found)
    out += ["", "`test` accuracy by seed, % (the RL arms' gain over the SFT arm they start from is per seed)", "",
            *table_head(["arm", *(f"seed {k}" for k in seeds)])]
    out += [f"| {arm} | " + " | ".join(f"{100 * a:.1f}" for a in ev[arm]["test"]["acc"]) + " |"
            for arm in ev if "test" in ev[arm]]
    return out
