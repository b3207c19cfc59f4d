"""
The walkthrough's pictures, one function each, sized for a projector: titles and axis labels that
say what is shown, values written where they carry the lesson, and colours told apart without red
and green (the Okabe-Ito palette: right steps blue, wrong ones vermillion).
"""
import matplotlib.pyplot as plt

RIGHT, WRONG, GREY = "#0072B2", "#D55E00", "#BBBBBB"
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
plt.rcParams.update({"font.size": 12, "axes.titlesize": 13, "axes.labelsize": 12, "legend.fontsize": 10,
                     "xtick.labelsize": 11, "ytick.labelsize": 11, "axes.prop_cycle": plt.cycler(color=PALETTE)})


def base_bars(rows: dict, splits: list[str], live: dict):
    """Section 1: three bars per split (the base's build figures) and the live answers as dots."""
    fig, ax = plt.subplots(figsize=(12, 4.2))
    width = 0.27
    for k, (name, r) in enumerate(rows.items()):
        xs = [i + width * (k - 1) for i in range(len(splits))]
        bars = ax.bar(xs, [r[s] for s in splits], width, label=name)
        ax.bar_label(bars, [f"{r[s]:.0%}" if r[s] >= 0.1 else "" for s in splits], fontsize=9, label_type="center",
                     color="white")
        ax.bar_label(bars, [f"{r[s]:.0%}" if r[s] < 0.1 else "" for s in splits], fontsize=9, padding=1)
    for k, (name, (marker, hits)) in enumerate(live.items()):
        ax.plot([width * (k - 1)] * len(hits), hits, marker, color="black", ms=9, label=name)
    ax.set_xticks(range(len(splits)), splits)
    ax.set(ylim=(0, 1.12), ylabel="share of 200 problems",
           title="The base executes a handed plan and plans in its own words; it never answers the bare question")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def mask_ribbons(rows: list[tuple[str, list[bool]]]):
    """Section 2: each example's tokens at their true length, supervised ones dark."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(13, 1.2 * len(rows) + 0.6), sharex=True)
    longest = max(len(sup) for _, sup in rows)
    for ax, (name, sup) in zip(axes, rows):
        ax.bar(range(len(sup)), [1] * len(sup), width=1.0, color=[RIGHT if s else GREY for s in sup])
        ax.set(xlim=(-0.5, longest - 0.5), yticks=[])
        ax.set_ylabel(f"{name}\n{sum(sup)} of {len(sup)}", rotation=0, ha="right", va="center")
    axes[-1].set_xlabel("token of one example (blue: supervised, grey: the prompt, seen but not supervised)")
    axes[0].set_title("What each stage-1 arm is trained to write, token by token")
    return fig


def loss_curves(series: dict, xlabel: str, ylabel: str, title: str):
    """Sections 3 and 4: named (x, y) series."""
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, "o-" if len(xs) < 40 else "-", ms=4, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend()
    return fig


def group_grid(correct, overconfident, marks: dict):
    """Section 5: P prompts x G samples, right or wrong, with the number of confidently wrong steps in
    each cell; marks: {(prompt, sample) or prompt: label}, a sample's written in its cell and a
    prompt's beside its row, both outlined."""
    P, G = correct.shape
    fig, ax = plt.subplots(figsize=(G * 1.0 + 3.5, P * 0.9 + 1.4))
    ax.imshow(correct.float(), cmap=plt.matplotlib.colors.ListedColormap([WRONG, RIGHT]), vmin=0, vmax=1)
    for p in range(P):
        for g in range(G):
            k, note = int(overconfident[p, g]), marks.get((p, g))
            sure = f"\n{k} sure\nwrong step{'s' * (k > 1)}" if k else ""
            ax.text(g, p, ("right" if correct[p, g] else "wrong") + sure + (f"\n({note})" if note else ""),
                    ha="center", va="center", color="white", fontsize=8)
    for where, name in marks.items():
        p, g = (where, None) if isinstance(where, int) else where
        x0, w = (-0.5, G) if g is None else (g - 0.5, 1)
        ax.add_patch(plt.Rectangle((x0, p - 0.5), w, 1, fill=False, lw=3, ec="black"))
        if g is None:
            ax.annotate(name, (x0 + w, p), xytext=(8, 0), textcoords="offset points", va="center", fontsize=10,
                        annotation_clip=False)
    ax.set(xticks=range(G), yticks=range(P), xlabel="sample", ylabel="prompt",
           title=f"{P} prompts x {G} samples at temperature 1: right (blue) or wrong (vermillion)")
    return fig


def token_probs(probs: list[float], steps: list[tuple[int, int, bool, float]], title: str):
    """Section 6: the probability of every token of one completion; the result tokens of each step
    coloured right or wrong, each step's confidence written above it, the confident wrong ones called out."""
    colours = [GREY] * len(probs)
    for i, j, right, _ in steps:
        colours[i:j] = [RIGHT if right else WRONG] * (j - i)
    fig, ax = plt.subplots(figsize=(14, 3.8))
    ax.bar(range(len(probs)), probs, color=colours, width=0.9)
    for i, j, right, conf in steps:
        ax.text((i + j - 1) / 2, 1.03, f"{conf:.2f}", ha="center", fontsize=9, color=RIGHT if right else WRONG)
        if not right and conf > 0.9:
            ax.annotate("wrong, yet\nconfident", ((i + j - 1) / 2, 1.12), xytext=(0, 22), textcoords="offset points",
                        ha="center", fontsize=10, color=WRONG, arrowprops=dict(arrowstyle="->", color=WRONG))
    ax.set(ylim=(0, 1.5), xlabel="token of the completion",
           ylabel="p(token)", title=title)
    ax.bar([0], [0], color=RIGHT, label="a right step's result")
    ax.bar([0], [0], color=WRONG, label="a wrong step's result")
    ax.legend(loc="lower left")
    return fig


def reward_bars(names: list[str], correct: list[float], shaped: list[float], lam: float):
    """Section 7: per completion, the CCRL reward's two parts stacked, its total, and the outcome reward."""
    fig, ax = plt.subplots(figsize=(13, 4.5))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], correct, 0.4, color=RIGHT, label="correct (0 or 1)")
    ax.bar([x - 0.2 for x in xs], shaped, 0.4, bottom=[c if s > 0 else 0 for c, s in zip(correct, shaped)],
           color="#56B4E9", label=f"lambda x T (lambda = {lam})")
    for x, c, s in zip(xs, correct, shaped):
        ax.text(x - 0.2, max(c + s, c, 0) + 0.04, f"CCRL\n{c + s:+.2f}", ha="center", fontsize=10)
        ax.text(x + 0.2, c + 0.04, f"outcome\n{c:.0f}", ha="center", fontsize=10)
    ax.bar([x + 0.2 for x in xs], correct, 0.4, color="#E69F00", label="outcome reward")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(list(xs), names, fontsize=10)
    ax.set(ylim=(min(-0.7, min(shaped) - 0.2), 1.9), ylabel="reward",
           title="The outcome reward sees only the answer; CCRL also charges confident wrong steps")
    ax.legend(loc="upper right", ncol=3)
    return fig


def advantage_maps(maps: dict, rows: dict):
    """Section 8: advantages of the same groups under each reward, side by side, values in the cells,
    one symmetric colour scale (nothing clipped); rows: {prompt: label} called out."""
    lim = max(float(a.abs().max()) for a in maps.values()) or 1.0
    fig, axes = plt.subplots(1, len(maps), figsize=(7 * len(maps), 0.8 * len(next(iter(maps.values()))) + 1.8),
                             layout="constrained")
    for ax, (name, A) in zip(axes, maps.items()):
        im = ax.imshow(A, cmap="PuOr_r", vmin=-lim, vmax=lim)
        for p in range(A.shape[0]):
            for g in range(A.shape[1]):
                strong = abs(float(A[p, g])) > 0.6 * lim
                ax.text(g, p, f"{A[p, g]:+.2f}", ha="center", va="center", fontsize=9,
                        color="white" if strong else "black")
        ax.set(title=name, xlabel="sample", ylabel="prompt", xticks=range(A.shape[1]), yticks=range(A.shape[0]))
        for p, label in rows.items():
            ax.add_patch(plt.Rectangle((-0.5, p - 0.5), A.shape[1], 1, fill=False, lw=3, ec="black"))
    fig.colorbar(im, ax=list(axes), label="advantage A")
    fig.suptitle("; ".join(f"prompt {p}: {label}" for p, label in rows.items()))
    return fig


def update_scatter(adv, delta, title: str):
    """Section 9: the change of each completion's log-probability against its advantage."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.scatter(adv, delta, color=RIGHT)
    ax.axhline(0, color="black", lw=0.6)
    ax.axvline(0, color="black", lw=0.6)
    ax.set(xlabel="advantage A of the completion", ylabel="change in log p(completion)", title=title)
    return fig


def stage2_panels(steps: list[dict], evals: list[dict], split: str):
    """Section 10: what a stage-2 run logged, one quantity per panel, each titled and labelled."""
    xs = [r["step"] for r in steps]
    panels = [("Reward and its parts (samples)", "reward", [("reward", "CCRL reward"), ("correct_part", "correct"),
                                                             ("conf_part", "lambda x mean T")]),
              ("Accuracy", "share right", [("acc", "sampled answers")]),
              ("Overconfident step errors", "share of steps", [("overconf_err", "wrong at confidence > 0.9")]),
              ("Step confidence", "mean confidence", [("conf_right", "right steps"), ("conf_wrong", "wrong steps")]),
              ("Groups with no reward spread", "share of groups", [("zero_spread", "all rewards equal")])]
    fig, axes = plt.subplots(1, len(panels), figsize=(22, 4.2))
    for ax, (title, ylabel, keys) in zip(axes, panels):
        for key, name in keys:
            ax.plot(xs, [r.get(key) for r in steps], label=name)
        ax.set(title=title, xlabel="step", ylabel=ylabel)
    axes[1].plot([r["step"] for r in evals], [r["acc"] for r in evals], "ko-", label=f"greedy, {split}")
    for ax in axes:
        ax.legend(fontsize=9)
    return fig


def before_after(res: dict, splits: list[str], metrics: dict):
    """Section 11: for each metric a panel of bars, checkpoints x splits, values written on the bars."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.4))
    width = 0.8 / len(res)
    for ax, (key, (title, ylabel)) in zip(axes, metrics.items()):
        for k, (name, per) in enumerate(res.items()):
            xs = [i + (k - (len(res) - 1) / 2) * width for i in range(len(splits))]
            values = [per[s].get(key) or 0.0 for s in splits]  # (None: nothing measured, drawn as 0)
            bars = ax.bar(xs, values, width, label=name)
            ax.bar_label(bars, [f"{v:.2f}" for v in values], fontsize=9, padding=1)
        ax.set_xticks(range(len(splits)), splits)
        ax.set(title=title, ylabel=ylabel)
        ax.margins(y=0.15)
    axes[len(axes) // 2].legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(res))  # (below the bars)
    return fig
