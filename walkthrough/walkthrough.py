# %% [markdown]
# # CoMT, then CCRL: the whole method, live, on a laptop CPU
#
# The method is the paper's, "From Meta-Thought to Execution" (arXiv 2601.21909): stage 1,
# **CoMT-SFT**, fine-tunes a model on abstract plans (meta-thoughts: what to compute, in which order,
# no numbers); stage 2, **CCRL**, is GRPO whose reward adds to answer correctness the model's own
# confidence in each intermediate numeric result, so that confident wrong steps cost the most.
#
# One file, one concept a section, in the order the method runs. Each algorithm section states its
# step as an equation, computes it in a few lines of its own, then asserts that the project's
# function gives the same number (the lesson is the equality), and draws one picture. The lecturer's
# guide (`walkthrough/GUIDE.md`) has the 90-minute plan, questions to predict before running, and a
# table of what changes when one flag changes.
#
#     python walkthrough/walkthrough.py                     # the class profile: ~5 min on 2 cores, then ~20 s
#     COMT_WALK=smoke python walkthrough/walkthrough.py     # a minute: checks the file, not the method
#     jupytext --to notebook walkthrough/walkthrough.py     # a notebook, built from this file
#
# Profiles (`COMT_WALK`): `smoke` (tiny budgets, for CI), `class` (the default: stage 1 at its
# defaults, stage 2 shortened to fit a class period), `full` (the README's defaults). The runs go to
# `COMT_WALK_OUT` (default `runs/walk_<profile>`); a stage run is reused when its own checkpoint
# records the same command, today's code and the start it was trained from (one that stopped
# part-way continues), so a teacher runs the file once before class and the class steps through it
# in seconds (`walkthrough/lab.py`). Pictures are saved under `<out>/figures/` (and shown inline in a
# notebook; `walkthrough/figures.py` draws them), the marked examples in one page
# `<out>/examples.html`, each section's seconds in `<out>/sections.json`.

# %% [markdown]
# ## 0. Set-up: profile, budgets, paths
#
# **Concept.** The stages run as subprocesses (a stage takes the interrupt handler and locks its
# run folder for the life of its process, which a notebook kernel must not lose); everything else
# runs here, in this process, on the shipped base model.
#
# | | the paper's | this reproduction's own |
# |---|---|---|
# | stage 1 | SFT on a teacher's meta-thoughts (LLaMA-3.1-70B), 4-8B students, GSM8K/SVAMP | exact plans of a synthetic world's programs, a 3.1M-parameter base; a quarter of each batch replays the base's own corpus |
# | stage 2 | GRPO; reward = correctness + confidence on intermediate numeric tokens | the confidence aggregate (geometric mean), the step check (gold values), the signed form, charging gold steps never reached -1, paying 0 for a wrong answer's right steps |
# | claims | +2.19 points in distribution, +4.63 out, fewer overconfident errors, ~50% fewer SFT tokens | tested three seeds at a time by `experiment.py` (section 11 prints its reading) |
#
# **In the code:** `comt/` (what the scripts share), `sft_comt.py`, `ccrl.py`, `rewards.py`.
# **Look for:** the budgets of your profile.

# %%
import json
import math
import os
import sys
import textwrap


def project_root() -> str:
    """The repository root, from this file or from the working directory (a notebook has no __file__)."""
    here = os.path.dirname(os.path.abspath(globals().get("__file__", os.path.join(os.getcwd(), "x"))))
    for folder in (here, os.path.dirname(here), os.getcwd(), os.path.dirname(os.getcwd())):
        if os.path.isfile(os.path.join(folder, "sft_comt.py")):
            return folder
    raise SystemExit("run this from the comt repository (or its walkthrough/ folder)")


ROOT = project_root()
sys.path.insert(0, ROOT)
PROFILE = os.environ.get("COMT_WALK", "class")
PROFILES = {  # group: (prompts, samples) of section 5, drawn from `train` with seed 3, sampled with seed 0
    "smoke": dict(sft=["--steps", "8", "--eval-n", "8", "--log-every", "2"],
                  rl=["--steps", "2", "--prompts-per-step", "2", "--group-size", "4", "--max-new-tokens", "128",
                      "--eval-n", "8", "--eval-every", "2", "--log-examples", "1"],
                  eval_n=8, group=(2, 4), hand_steps=2, lesson_asserts=False),
    "class": dict(sft=[], rl=["--steps", "40", "--eval-every", "20", "--eval-n", "100", "--log-examples", "2"],
                  eval_n=60, group=(4, 8), hand_steps=5, lesson_asserts=True),
    "full": dict(sft=[], rl=["--log-examples", "2"], eval_n=200, group=(4, 8), hand_steps=5, lesson_asserts=True),
}
if PROFILE not in PROFILES:
    raise SystemExit(f"COMT_WALK={PROFILE}: choose one of {', '.join(PROFILES)}")
P = PROFILES[PROFILE]
sys.path.insert(0, os.path.join(ROOT, "walkthrough"))
import lab  # noqa: E402  (the bench: output folder, stage runs and their reuse)

OUT = lab.output_folder(PROFILE)
BASE = os.path.join(ROOT, "models", "base")
SFT_DIR, RL_DIR = os.path.join(OUT, "sft_comt"), os.path.join(OUT, "ccrl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

IN_KERNEL = "ipykernel" in sys.modules
import matplotlib  # noqa: E402

if not IN_KERNEL:
    matplotlib.use("Agg")  # files only; under a kernel the notebook's own backend stays
import torch  # noqa: E402

import figures  # noqa: E402  (the pictures)

torch.manual_seed(0)
EXAMPLES = []  # (section, question, [show.Example]) for the page
section = lab.Sections(OUT, PROFILE)
save = lambda fig, name: lab.save(fig, OUT, name, IN_KERNEL)


def log_rows(out: str) -> list[dict]:
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def wrapped(text: str, width: int = 100) -> str:
    """Long lines folded at spaces, never cut mid-word."""
    return "\n".join(textwrap.fill(line, width) or line for line in text.splitlines())


print(f"profile {PROFILE}; runs and figures in {OUT}")

# %% [markdown]
# ## 1. What the base can and cannot do
#
# **Concept.** The base (`models/base`, built by `base.py`) executes a plan it is handed, and plans
# in its own words ("Steps:"), for problems of every split; asked a question in the post-training
# format it does neither. Post-training teaches one format on the train recipe; the OOD splits ask
# how much of the base's planning survives. **In the code:** `base.py` (`evaluate_base`),
# `comt/evaluation.py` (`greedy_judgements`, `own_plan_judgements`). **Look for:** three bars per
# split, read from `build.json` (never typed in), and a few live answers agreeing with them.

# %%
from comt.common import check_checkpoint, load_model, pad_id  # noqa: E402
from comt.engine import Engine  # noqa: E402
from comt.evaluation import greedy_judgements, own_plan_judgements  # noqa: E402
from comt.tasks import make_split  # noqa: E402

with section("1. base"):
    build = json.load(open(os.path.join(BASE, "build.json")))
    rows = {"from the gold plan": build["from_plan"], "its own plans (plan right)": build["own_plan"]["plan_correct"],
            "question only": build["question_only"]}
    splits = list(build["from_plan"])
    assert all(set(r) == set(splits) for r in rows.values())
    tok = check_checkpoint(BASE, "base")
    engine = Engine(load_model(BASE).eval(), pad_id=pad_id(tok))
    live = make_split("test", 4, seed=1)
    planned = [j.correct for j in greedy_judgements(engine, tok, live, max_new_tokens=192, gold_plan=True)]
    own = [j["plan_correct"] for j in own_plan_judgements(engine, tok, live, max_new_tokens=192)]
    save(figures.base_bars(rows, splits, {"live, test: right from the gold plan": (".", planned),
                                          "live, test: own plan right": ("x", own)}), "1_base")
    for name, r in rows.items():
        print(f"{name:28s}", "  ".join(f"{s} {r[s]:.0%}" for s in splits))

# %% [markdown]
# ## 2. The CoMT target and its loss mask, against CoT
#
# **Concept.** CoMT supervises the plan and the `Solution:` marker, nothing after it: no execution
# of a training problem is ever supervised. CoT supervises the whole trajectory: plan, execution,
# answer, stop token. (Stage 1 also gives a quarter of each batch to replay documents of the base's
# own corpus, supervised on their execution, in both arms alike: section 3.) **In the code:**
# `comt/tasks.py` (`encode_example`, `comt_target`), `sft_comt.py` (`show_mask`). **Look for:** the
# same prompt, the blue (supervised) tokens, and how much shorter CoMT's example is.

# %%
from comt.tasks import encode_example  # noqa: E402
from sft_comt import show_mask  # noqa: E402

with section("2. target and mask"):
    p = make_split("train", 1, seed=0)[0]
    comt_ids, comt_sup = encode_example(tok, p, fmt="comt")
    cot_ids, cot_sup = encode_example(tok, p, fmt="cot")
    supervised = lambda ids, sup: [t for t, s in zip(ids, sup) if s]
    assert supervised(cot_ids, cot_sup)[:sum(comt_sup)] == supervised(comt_ids, comt_sup)  # a prefix of CoT's
    print(wrapped(show_mask(tok, comt_ids, comt_sup)))
    save(figures.mask_ribbons([("CoMT", comt_sup), ("CoT", cot_sup)]), "2_mask")
    many = make_split("train", 200, seed=0)
    per = {f: sum(sum(encode_example(tok, q, fmt=f)[1]) for q in many) / len(many) for f in ("comt", "cot")}
    print(f"supervised tokens per example over 200 train problems: CoMT {per['comt']:.1f}, CoT {per['cot']:.1f} "
          f"({per['comt'] / per['cot'] - 1:+.0%})")

# %% [markdown]
# ## 3. One SFT step by hand, with replay
#
# **Concept.** The loss of a global batch is the mean cross-entropy over all its supervised tokens:
#
# $$L = \frac{1}{N_{\text{sup}}} \sum_{(b,t)\,\text{supervised}} -\log p_\theta(x_{b,t} \mid x_{b,<t})$$
#
# so a micro-batch adds its sum divided by the whole batch's count, and splitting the batch changes
# nothing. Replay rows (documents of the base's own corpus) keep the base's execution. Below: the
# per-token cross-entropies by hand, their mean against `token_mean_loss`, the first step's loss
# against the hand mean, and an independent value: a model whose logits are all zero predicts
# uniformly, so its loss is exactly $\log V$. **In the code:** `sft_comt.py` (`token_mean_loss`,
# `sft_step`, `replay_examples`), `comt/training.py` (`target_logprobs`, `update`). **Look for:** the
# per-token loss along a plan falling after a few steps.

# %%
import torch.nn.functional as F  # noqa: E402

from comt import training  # noqa: E402
from comt.parallel import Dist  # noqa: E402
from sft_comt import SFTBatch, replay_examples, token_mean_loss  # noqa: E402

with section("3. one SFT step"):
    student = load_model(BASE)
    rows = [encode_example(tok, q, fmt="comt") for q in make_split("train", 6, seed=2)]
    rows += replay_examples(tok, step=0, n=2, seed=0)
    batch = SFTBatch(*training.pad_rows([ids for ids, _ in rows], [sup for _, sup in rows], pad=pad_id(tok)))

    def token_loss(model, ids: torch.Tensor) -> torch.Tensor:  # (B,T-1) cross-entropy of every next token
        logits = model(ids)[:, :-1]  # (B,T-1,V): position t predicts token t+1
        return -F.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]

    per_token = token_loss(student, batch.ids)
    target = batch.mask[:, 1:]  # (B,T-1): the supervised tokens, seen from the position that predicts them
    hand_sum, n_sup = per_token[target].sum(), int(target.sum())
    project = lambda model: token_mean_loss(n_sup)(batch, training.target_logprobs(model, batch.ids, batch.mask), None)
    assert math.isclose(project(student)[0].item(), hand_sum.item() / n_sup, rel_tol=1e-5)
    uniform = load_model(BASE)
    with torch.no_grad():
        uniform.model.norm.weight.zero_()  # every hidden state 0, so every logit 0: p = 1/V for every token
    assert math.isclose(project(uniform)[0].item(), math.log(len(tok)), rel_tol=1e-5)
    run = training.Run(args=None, dist=Dist(), device=torch.device("cpu"), tok=tok, model=student,
                       opt=torch.optim.AdamW(student.parameters(), betas=(0.9, 0.95)),
                       schedule=training.Schedule(lr=5e-4, warmup=0, steps=P["hand_steps"]))
    before = per_token[0][target[0]].detach()
    losses = [training.update(run, [batch], token_mean_loss(n_sup), step=k, empty=None)[0]["loss_sum"].item() / n_sup
              for k in range(P["hand_steps"])]  # (sft_comt.sft_step's update, on this one batch)
    assert math.isclose(losses[0], hand_sum.item() / n_sup, rel_tol=1e-5)  # the step's loss: the hand mean
    with torch.no_grad():
        after = token_loss(student, batch.ids[:1])[0][target[0]]
    save(figures.loss_curves({"before": (range(len(before)), before.tolist()),
                              f"after {len(losses)} AdamW steps": (range(len(after)), after.tolist())},
                             "supervised token of the first plan", "cross-entropy (nats)",
                             "One plan's per-token loss, before and after a few steps on this batch"), "3_sft_step")
    print(f"hand mean {hand_sum.item() / n_sup:.4f} = step loss {losses[0]:.4f}; uniform model: "
          f"{math.log(len(tok)):.4f} = log {len(tok)}; loss per step: {[round(x, 3) for x in losses]}")

# %% [markdown]
# ## 4. Stage 1 for real
#
# **Concept.** `python sft_comt.py`: the CoMT arm at its defaults (in the smoke profile, a few
# steps). **In the code:** `sft_comt.py` (`main`, `sft_step`, `record`, `summary`). **Look for:** the
# loss curve, the summary (plans on every test answer, and their accuracy) and the greedy example.

# %%
with section("4. stage 1"):
    lab.stage("sft_comt.py", P["sft"], SFT_DIR)
    rows = log_rows(SFT_DIR)
    steps, summary = [r for r in rows if "loss" in r], rows[-1]
    assert summary["summary"] and summary["format"] == "comt"
    save(figures.loss_curves({"CoMT-SFT": ([r["step"] for r in steps], [r["loss"] for r in steps])}, "step",
                             "loss (mean token cross-entropy)",
                             f"Stage 1: test {summary.get('test_acc', float('nan')):.0%} right, plans on "
                             f"{summary.get('plan_rate', float('nan')):.0%} of answers"), "4_stage1")

# %% [markdown]
# ## 5. Sampling a group
#
# **Concept.** GRPO samples $G$ completions of each prompt at temperature 1 and keeps the log-prob of
# every token it drew; the update later recomputes them in one teacher-forced forward, and the two
# must agree. **In the code:** `comt/engine.py` (`Engine.generate`), `ccrl.py` (`sample_and_judge`),
# `comt/training.py` (`target_logprobs`). **Look for:** the $P \times G$ grid of right and wrong, the
# cells with confidently wrong steps (sections 6 and 7 take one of them), and a group with no right
# answer at all (section 8 takes it).

# %%
from ccrl import Sampling, sample_and_judge  # noqa: E402
from comt.engine import stop_ids  # noqa: E402
from comt.tasks import encode_prompt  # noqa: E402
from comt.training import target_logprobs  # noqa: E402
from rewards import RewardSettings  # noqa: E402

SURE = 0.9  # an overconfident error: a wrong step written with confidence above this

with section("5. a group"):
    policy = load_model(SFT_DIR).eval()
    policy_engine = Engine(policy, pad_id=pad_id(tok))
    n_prompts, group = P["group"]
    problems = make_split("train", n_prompts, seed=3)
    ro = sample_and_judge(policy_engine, tok, problems, Sampling(group_size=group, max_new_tokens=256),
                          scoring=RewardSettings(), seed=0)
    prompt = encode_prompt(tok, problems[0])  # one more sample: its log-probs as drawn, then teacher-forced
    s = policy_engine.generate([prompt], num_samples=1, max_new_tokens=256, temperature=1.0, seed=0,
                               stop_tokens=stop_ids(tok, policy))
    ids, sampled = s.completion(0)
    mask = torch.tensor([[False] * len(prompt) + [True] * len(ids)])
    with torch.no_grad():
        teacher_forced = target_logprobs(policy, torch.tensor([prompt + ids]), mask)
    assert torch.allclose(teacher_forced, torch.tensor(sampled), atol=1e-4)
    confident_wrong = lambda j: sum(c > SURE and not z for c, z in zip(j.step_confs, j.step_rights))
    counts = torch.tensor([confident_wrong(j) for j in ro.judged]).view(n_prompts, group)
    sure_wrong = next((i for i, j in enumerate(ro.judged) if confident_wrong(j)), None)  # found, not picked
    all_wrong = next((p for p in range(n_prompts) if not ro.correct[p].any()), None)
    if P["lesson_asserts"]:
        assert sure_wrong is not None and all_wrong is not None, "the seeds no longer give the lessons' examples"
    marks = {} if sure_wrong is None else {divmod(sure_wrong, group): "section 6"}
    marks.update({} if all_wrong is None else {all_wrong: "section 8: no right answer"})
    save(figures.group_grid(ro.correct, counts, marks), "5_group")
    gap = (teacher_forced - torch.tensor(sampled)).abs().max()
    print(f"sampled vs teacher-forced log-probs of one completion: largest difference {gap:.1e}")
    print(f"answers right: {ro.correct.float().mean():.0%}; samples with a wrong step at confidence > {SURE}: "
          f"{int((counts > 0).sum())} of {counts.numel()}; a group with no right answer: prompt {all_wrong}")

# %% [markdown]
# ## 6. Steps and the confidence of each
#
# **Concept.** A step is an `expr = result` line; its confidence is the geometric mean of the
# probabilities of the tokens that wrote its result (the default; `--conf-agg min` and `prod` are the
# others):
#
# $$c_s = \exp\Big(\frac{1}{|s|}\sum_{k \in s} \log p_\theta(x_k \mid x_{<k})\Big)$$
#
# A step is right when its result is one of the problem's gold intermediate values. An
# **overconfident error** is a wrong step written with $c_s > 0.9$. With almost every step written
# that sure, the count of overconfident errors follows the count of errors; calibration proper asks
# whether confidence *separates* right steps from wrong ones (section 11). **In the code:**
# `rewards.py` (`segment_steps`, `token_spans`, `confidence`, `step_right`, `judge`),
# `comt/show.py` (`marks`). **Look for:** a wrong step written as surely as the right ones.

# %%
from comt.show import Example, html_page, render_text  # noqa: E402
from rewards import confidence  # noqa: E402

with section("6. step confidence"):
    assert math.isclose(confidence([math.log(0.9), math.log(0.5)], agg="geo"), math.sqrt(0.45))  # by hand
    i6 = sure_wrong if sure_wrong is not None else 0
    j6, p6 = ro.judged[i6], problems[i6 // group]
    # the log-probs of this completion's tokens, recomputed teacher-forced (equal to the sampled ones: section 5)
    seq, start = ro.seqs[i6], ro.prompt_lens[i6]
    with torch.no_grad():
        lps = target_logprobs(policy, torch.tensor([seq]),
                              torch.tensor([[False] * start + [True] * (len(seq) - start)]))
    lps = lps.tolist()
    for st, c in zip(j6.steps, j6.step_confs):  # each step's confidence, by hand from its tokens
        a, b = st.tokens
        assert math.isclose(math.exp(sum(lps[a:b]) / (b - a)), c, rel_tol=1e-3), (st, c)
    if P["lesson_asserts"]:
        assert any(c > SURE and not z for c, z in zip(j6.step_confs, j6.step_rights))
    spans = [(st.tokens[0], st.tokens[1], z, c) for st, z, c in zip(j6.steps, j6.step_rights, j6.step_confs)]
    save(figures.token_probs([math.exp(x) for x in lps], spans,
                             f"Sample {i6 % group} of prompt {i6 // group}: each step's confidence above its result"),
         "6_confidence")
    print(render_text(Example("CoMT-SFT, a sample", p6.question, p6.answer, j6), ansi=False))
    EXAMPLES.append(("6. a sampled completion with a confident wrong step", p6.question,
                     [Example("CoMT-SFT", p6.question, p6.answer, j6)]))

# %% [markdown]
# ## 7. The CCRL reward against the outcome reward
#
# **Concept.** The outcome reward is $\mathbb{1}[\text{correct}]$. CCRL (this project's
# reconstruction; the paper's exact formula is not public) adds $\lambda T$:
#
# $$r = \mathbb{1}[\text{correct}] + \lambda T, \qquad T = \frac{1}{n + m}\Big(\sum_{s=1}^{n} t_s - m\Big), \qquad
# t_s = \begin{cases} +c_s & \text{right step, right answer} \\ 0 & \text{right step, wrong answer} \\
# -c_s & \text{wrong step} \end{cases}$$
#
# over the $n$ steps written and the $m$ gold steps never reached ($T = -1$ with no step at all).
# Below, `ccrl_by_hand` writes this in five lines; it is checked against the worked example of
# `rewards.py`'s header (a hand value: $T = (0 - 0.6 - 1)/3$, $r = -0.2667$), then against the
# project on five completions of one problem: four written by hand and the sampled one of section 6.
# **In the code:** `rewards.py` (`RewardSettings`, `confidence_term`, `judge`). **Look for:** the
# outcome reward cannot tell the two right completions apart, nor the wrong ones; CCRL charges the
# confident wrong step most.

# %%
from comt.tasks import cot_text  # noqa: E402


def ccrl_by_hand(confs: list[float], rights: list[bool], correct: bool, missing: int, lam: float) -> float:
    """r = correct + lam * T, T the mean of the step terms and -1 per missing step (-1 with no step)."""
    terms = [(c if correct else 0.0) if right else -c for c, right in zip(confs, rights)] + [-1.0] * missing
    T = sum(terms) / len(terms) if terms else -1.0
    return float(correct) + lam * T


def variants(p) -> dict:
    """Four completions of p: the gold one, the same with one result written as an unusual but equal
    decimal, a slip in the last step (a wrong answer), and one that stops after its first step."""
    lines = cot_text(p).split("\n")
    steps = [i for i, line in enumerate(lines) if " = " in line and line.rsplit(" = ", 1)[1].isdigit()]
    first, last = steps[0], steps[-1]
    unsure = lines.copy()
    unsure[first] += ".0"
    slip = lines.copy()
    wrong = str(int(lines[last].rsplit(" = ", 1)[1]) + 1)
    slip[last] = lines[last].rsplit(" = ", 1)[0] + " = " + wrong
    slip[-1] = f"Answer: {wrong}"
    stopped = lines[:first + 1] + [f"Answer: {lines[first].rsplit(' = ', 1)[1]}"]
    return {"right, sure": lines, "right, one result\nas a decimal": unsure, "wrong: last step\nslips (unsure)": slip,
            "wrong: stops after\none step": stopped}


def scored(model, p, text: str, settings: RewardSettings):
    """Judge a written completion with the model's own (teacher-forced) log-probs of its tokens."""
    from rewards import judge_completion
    prompt = encode_prompt(tok, p)
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    mask = torch.tensor([[False] * len(prompt) + [True] * len(ids)])
    with torch.no_grad():
        lps = target_logprobs(model, torch.tensor([prompt + ids]), mask).tolist()
    return judge_completion(tok, ids, lps, p, settings)


with section("7. CCRL vs outcome"):
    lam = RewardSettings().conf_weight
    assert math.isclose(ccrl_by_hand([0.9, 0.6], [True, False], correct=False, missing=1, lam=0.5), -0.2667,
                        abs_tol=1e-4)  # rewards.py's worked example, by hand
    judged = {name: scored(policy, p6, "\n".join(lines), RewardSettings()) for name, lines in variants(p6).items()}
    judged["sampled: a confident\nwrong step (sec. 6)"] = j6
    for name, jj in judged.items():  # the formula by hand, against rewards.judge
        missing = max(0, len(p6.intermediates) - len(jj.steps))
        assert math.isclose(ccrl_by_hand(jj.step_confs, jj.step_rights, jj.correct, missing, lam), jj.reward,
                            abs_tol=1e-9), name
    names = list(judged)
    save(figures.reward_bars(names, [float(judged[n].correct) for n in names],
                             [lam * judged[n].conf_term for n in names], lam), "7_rewards")
    for name, jj in judged.items():
        print(f"{name.replace(chr(10), ' '):40s} correct {int(jj.correct)}  T {jj.conf_term:+.3f}  CCRL "
              f"{jj.reward:+.3f}  outcome {int(jj.correct)}  step confidences {[round(c, 3) for c in jj.step_confs]}")
    EXAMPLES.append(("7. five completions of one problem, scored", p6.question,
                     [Example(name.replace("\n", " "), p6.question, p6.answer, jj) for name, jj in judged.items()]))

# %% [markdown]
# ## 8. Group advantages, zero-spread groups and the correctness filter
#
# **Concept.** Each sample's advantage is its reward against its group's, with the population std:
#
# $$A_i = \frac{r_i - \bar r}{\sigma_r + \epsilon}, \qquad \bar r = \frac{1}{G}\sum_j r_j, \quad
# \sigma_r = \sqrt{\frac{1}{G}\sum_j (r_j - \bar r)^2}$$
#
# A group whose rewards are all equal teaches nothing and gets exactly 0. Under the outcome reward a
# group with no right answer is such a group; under CCRL its confidence terms differ, so its samples
# get advantages all the same: a *phantom gradient* that pushes among wrong answers only.
# `--filter-groups` drops groups whose answers are all right or all wrong, judged by correctness,
# never by the shaped reward. **In the code:** `rewards.py` (`group_advantages`, `mixed_groups`),
# `ccrl.py` (`advantages_and_filter`). **Look for:** the all-wrong group: a row of zeros on the left,
# not on the right.

# %%
from rewards import group_advantages, mixed_groups  # noqa: E402


def zscore_by_hand(R: torch.Tensor) -> torch.Tensor:
    """(P,G) rewards -> (P,G) advantages, the population std, 0 for a group with no spread."""
    centred = R - R.mean(1, keepdim=True)
    return centred / (centred.pow(2).mean(1, keepdim=True).sqrt() + 1e-6)


with section("8. advantages"):
    outcome, shaped = ro.correct.float(), ro.rewards  # (P,G) the groups of section 5, two rewards
    A_out, A_ccrl = group_advantages(outcome), group_advantages(shaped)
    assert torch.allclose(A_ccrl, zscore_by_hand(shaped), atol=1e-5)
    assert torch.allclose(group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]])), torch.tensor([[1.0, -1, -1, 1]]),
                          atol=1e-5)  # by hand: mean 1/2, population std 1/2
    if all_wrong is not None:
        print(f"prompt {all_wrong}, no right answer: outcome advantages {A_out[all_wrong].tolist()}, CCRL "
              f"{[round(a, 2) for a in A_ccrl[all_wrong].tolist()]}; --filter-groups keeps it: "
              f"{bool(mixed_groups(ro.correct)[all_wrong])}")
        if P["lesson_asserts"]:
            assert torch.equal(A_out[all_wrong], torch.zeros(group)) and A_ccrl[all_wrong].abs().sum() > 0
    save(figures.advantage_maps({"outcome reward (GRPO)": A_out, "CCRL reward": A_ccrl},
                                {} if all_wrong is None else {all_wrong: "no right answer: 0 under the outcome "
                                                              "reward, a phantom gradient under CCRL"}),
         "8_advantages")
    print("groups --filter-groups keeps (right and wrong answers):", mixed_groups(ro.correct).tolist())

# %% [markdown]
# ## 9. One policy update
#
# **Concept.** With $\rho_t = \exp(\log p_\theta - \log p_{\text{old}})$ and weights $w_t$ (1 / all
# completion tokens of the step), the loss is
#
# $$L = -\sum_t w_t \min\big(\rho_t A,\ \text{clip}(\rho_t, 1 - \epsilon_{low}, 1 + \epsilon_{high}) A\big)$$
#
# On policy (one PPO epoch) $\rho_t = 1$ exactly, nothing is clipped, and its gradient is the
# REINFORCE gradient $-\sum_t w_t A \nabla \log p_\theta(x_t)$, which below is written by hand and
# compared. Then one step of `ccrl.py`'s optimiser (AdamW, its default learning rate) on it.
# **In the code:** `ccrl.py` (`make_batches`, `policy_loss`, `policy_update`). **Look for:**
# completions with a positive advantage became likelier, those with a negative one less likely.

# %%
from ccrl import Update, make_batches, policy_loss  # noqa: E402

with section("9. one update"):
    learner = load_model(SFT_DIR)
    adv = A_ccrl.flatten().tolist()
    total = (float(sum(len(s) - n for s, n in zip(ro.seqs, ro.prompt_lens))), float(len(ro.seqs)))
    b = make_batches(ro.seqs, ro.prompt_lens, adv, agg="token", max_new=256, micro=len(ro.seqs), pad=pad_id(tok),
                     totals=total)[0]
    logprobs = lambda: training.target_logprobs(learner, b.ids, b.mask, temperature=1.0)  # (N,) each completion token's
    loss, stats = policy_loss(b, logprobs(), ref_logp=None, u=Update())  # ccrl.py's defaults: clip 0.2 / 0.28
    assert stats["clipped"] == 0  # rho = exp(logp - logp.detach()) = 1 exactly
    g_ppo = torch.autograd.grad(loss, list(learner.parameters()))
    per_row = b.mask[:, 1:].sum(1)  # (B,) completion tokens of each row
    reinforce = -(b.weight.repeat_interleave(per_row) * b.adv.repeat_interleave(per_row) * logprobs()).sum()
    g_pg = torch.autograd.grad(reinforce, list(learner.parameters()))
    assert all(torch.allclose(x, y, atol=1e-7) for x, y in zip(g_ppo, g_pg))

    def sequence_logps() -> torch.Tensor:  # (rows,) summed log-prob of each completion, in batch order
        with torch.no_grad():
            return torch.stack([lp.sum() for lp in logprobs().split(per_row.tolist())])

    before = sequence_logps()
    opt = torch.optim.AdamW(learner.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)  # as ccrl.py
    for p_, g in zip(learner.parameters(), g_ppo):
        p_.grad = g
    opt.step()
    delta = sequence_logps() - before
    save(figures.update_scatter(b.adv, delta, "One AdamW step (lr 1e-4) on the policy loss"), "9_update")
    agree = ((delta > 0) == (b.adv > 0))[b.adv != 0].float().mean()
    print(f"completions whose log-probability moved the way their advantage points: {agree:.0%}")

# %% [markdown]
# ## 10. Stage 2 for real
#
# **Concept.** `python ccrl.py --init <stage 1>`: the five steps above, repeated (shortened in the
# class profile). What its log calls each quantity: `reward` (the CCRL reward of the samples, mean),
# `correct_part` and `conf_part` (its two parts: the share right, and $\lambda$ times the mean $T$),
# `acc` (the sampled answers right), `overconf_err` (wrong steps at confidence > 0.9, per step),
# `conf_right` / `conf_wrong` (the mean confidence of right and of wrong steps), `zero_spread` (the
# share of groups whose rewards are all equal: they add nothing to the update). **In the code:**
# `ccrl.py` (`rl_step`, `record`), `comt/evaluation.py` (`sample_metrics`). **Look for:** the greedy
# accuracy going up, and the wrong steps' confidence coming down.

# %%
with section("10. stage 2"):
    lab.stage("ccrl.py", ["--init", SFT_DIR, *P["rl"]], RL_DIR)
    rows = log_rows(RL_DIR)
    steps = [r for r in rows if "reward" in r and "summary" not in r]
    evals = [r for r in rows if r.get("eval")]
    save(figures.stage2_panels(steps, evals, evals[0].get("split", "test") if evals else "test"), "10_stage2")
    print("greedy accuracy at each evaluation:", [(r["step"], r["acc"]) for r in evals])
    examples = open(os.path.join(RL_DIR, "examples.txt")).read().split("=== step ")
    print("the last logged sample:\n=== step " + examples[-1].strip())

# %% [markdown]
# ## 11. Before and after
#
# **Concept.** The same problems for the base (from the gold plan: its ceiling), CoMT-SFT and CCRL:
# accuracy, overconfident step errors, and the step-level calibration error (ECE: how far the
# steps' confidence is from their accuracy, bin by bin); then one problem the two stages answer
# differently, and the committed three-seed experiment's reading, including what does not
# reproduce. **In the code:** `evaluate.py` (its tables, JSON and reliability diagrams),
# `experiment.py`. **Look for:** where CCRL gains, and whether it gains by erring less or by
# being surer only where it is right.

# %%
from comt.tasks import plan_program  # noqa: E402


def num(x) -> str:
    """A measured share, or n/a where there was nothing to measure (no step at all, say)."""
    return "n/a" if x is None else f"{x:.3f}"


def what_changed(before, after, p) -> str:
    """A sentence on how two completions of one problem differ: the plan's length against the gold
    program's, and the first wrong step with its confidence."""
    gold = len(p.intermediates)
    say = []
    for name, j in (("CoMT-SFT", before), ("CCRL", after)):
        plan = plan_program(j.text) or []
        wrong = next(((st, c) for st, c, z in zip(j.steps, j.step_confs, j.step_rights) if not z), None)
        say.append(f"{name} plans {len(plan)} step(s) of the gold {gold}, answers "
                   f"{'right' if j.correct else 'wrong'}" +
                   (f", its first wrong step `{wrong[0].expr} = {wrong[0].value}` written at confidence "
                    f"{wrong[1]:.2f}"
                    if wrong else ""))
    return "; ".join(say) + "."


with section("11. before and after"):
    n, stem = str(P["eval_n"]), os.path.join(OUT, "eval")
    common = ["--splits", "test,ood_template", "--n", n, "--max-new-tokens", "256"]
    res = {**lab.evaluation([BASE], ["--gold-plan", *common], f"{stem}_base.json")["results"],
           **lab.evaluation([SFT_DIR, RL_DIR], common, f"{stem}_stages.json")["results"]}
    names = {"base": "base (gold plan)", os.path.basename(SFT_DIR): "CoMT-SFT", os.path.basename(RL_DIR): "CCRL"}
    shown = {names[k]: v for k, v in res.items()}
    save(figures.before_after(shown, ["test", "ood_template"],
                              {"acc": ("Accuracy", "share right"),
                               "overconf_err": ("Overconfident step errors", "share of steps"),
                               "step_ece": ("Step calibration error (ECE)", "ECE (0 = calibrated)")}),
         "11_before_after")
    for split in ("test", "ood_template"):
        print(split + ":  " + ";  ".join(f"{name} acc {num(m[split]['acc'])}, overconfident "
                                        f"{num(m[split]['overconf_err'])}, step ECE {num(m[split]['step_ece'])}"
                                        for name, m in shown.items()))
    ok_sft = res[os.path.basename(SFT_DIR)]["test"]["per_problem"]["ok"]
    ok_rl = res[os.path.basename(RL_DIR)]["test"]["per_problem"]["ok"]
    fixed = next((i for i, (a, b) in enumerate(zip(ok_sft, ok_rl)) if b and not a), None)  # CCRL right, SFT wrong
    q = make_split("test", int(n), seed=0)[fixed if fixed is not None else 0]
    pair = [greedy_judgements(Engine(load_model(d).eval(), pad_id=pad_id(tok)), tok, [q], max_new_tokens=256)[0]
            for d in (SFT_DIR, RL_DIR)]
    for label, j in zip(("CoMT-SFT", "CCRL"), pair):
        print(render_text(Example(label, q.question, q.answer, j), ansi=False))
    print(wrapped("What changed: " + what_changed(*pair, q)))
    EXAMPLES.append(("11. a test problem CCRL gets right and CoMT-SFT wrong", q.question,
                     [Example(label, q.question, q.answer, j) for label, j in zip(("CoMT-SFT", "CCRL"), pair)]))
    committed = os.path.join(ROOT, "results", "default.md")
    if os.path.isfile(committed):
        text = open(committed).read()
        start = text.find("What the default reproduces")  # the generated reading, claim by claim, whole
        end = text.find("\n\n", text.find("\n- ", start))
        print(wrapped(text[start:end if end > 0 else None]))

# %% [markdown]
# ## 12. Where next
#
# The baselines are flags: `sft_comt.py --format cot` (CoT-SFT), `ccrl.py --reward outcome`
# (outcome-only GRPO). The reward's switches (`--conf-weight`, `--conf-form brier`, `--conf-agg min`,
# `--step-check arith`, `--plan-weight`) and the update's (`--filter-groups`, `--ppo-epochs`,
# `--kl-coef`) are one flag each; `python experiment.py` runs the 2x2 of SFT target and reward over
# three seeds with paired intervals; `walkthrough/exercises.py` holds exercises with checkers, and
# `walkthrough/GUIDE.md` a table of what one flag changes, measured.

# %%
with section("12. where next"):
    page = os.path.join(OUT, "examples.html")
    lab.write_page(page, html_page("CoMT and CCRL, the walkthrough's marked examples", EXAMPLES, []))
    print(f"marked examples: {page}; figures: {os.path.join(OUT, 'figures')}; seconds: {section.seconds}")
