# %% [markdown]
# # CoMT, then CCRL: the whole method, live, on a laptop CPU
#
# One file, one concept a section: what the base can and cannot do, what CoMT supervises, one SFT
# step by hand, stage 1 for real, a sampled group, the confidence of each step, the CCRL reward
# against the outcome reward, group advantages, one policy update, stage 2 for real, and what
# changed. Each section says which project functions it shows, draws a picture, and where the
# lesson is an identity, re-derives it in a line or three and asserts that the project's own
# function gives the same: the lesson is the equality.
#
#     python walkthrough/walkthrough.py                     # the class profile: ~5 min on 2 cores, then 16 s
#     COMT_WALK=smoke python walkthrough/walkthrough.py     # a minute: checks the file, not the method
#     jupytext --to notebook walkthrough/walkthrough.py     # a notebook, built from this file
#
# Profiles (`COMT_WALK`): `smoke` (tiny budgets, for CI), `class` (the default: stage 1 at its
# defaults, stage 2 shortened to fit a class period), `full` (the README's defaults). The runs go to
# `COMT_WALK_OUT` (default `runs/walk_<profile>`); a stage run is reused when its own checkpoint
# records the same command, today's code and the start it was trained from (one that stopped
# part-way continues), so a teacher runs the file once before class and the class steps through it
# in seconds (`walkthrough/lab.py`).
# Pictures are saved under `<out>/figures/` (and shown inline in a notebook), the marked examples
# in one page `<out>/examples.html`, each section's seconds in `<out>/sections.json`.

# %% [markdown]
# ## 0. Set-up: profile, budgets, paths
#
# **Concept.** The stages run as subprocesses (a stage takes the interrupt handler and locks its
# run folder for the life of its process, which a notebook kernel must not lose); everything else
# runs here, in this process, on the shipped base model. **In the code:** `comt/` (the package the
# scripts share), `sft_comt.py`, `ccrl.py`, `rewards.py`. **Look for:** the budgets of your profile.

# %%
import json
import math
import os
import sys


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
PROFILES = {
    "smoke": dict(sft=["--steps", "8", "--eval-n", "8", "--log-every", "2"],
                  rl=["--steps", "2", "--prompts-per-step", "2", "--group-size", "4", "--max-new-tokens", "128",
                      "--eval-n", "8", "--eval-every", "2", "--log-examples", "1"],
                  eval_n=8, group=(2, 4), hand_steps=2),
    "class": dict(sft=[], rl=["--steps", "40", "--eval-every", "20", "--eval-n", "100", "--log-examples", "2"],
                  eval_n=60, group=(4, 8), hand_steps=5),
    "full": dict(sft=[], rl=["--log-examples", "2"], eval_n=200, group=(8, 8), hand_steps=5),
}
if PROFILE not in PROFILES:
    raise SystemExit(f"COMT_WALK={PROFILE}: choose one of {', '.join(PROFILES)}")
P = PROFILES[PROFILE]
sys.path.insert(0, os.path.join(ROOT, "walkthrough"))
import lab  # noqa: E402  (the bench: output folder, figures, stage runs and their reuse)

OUT = lab.output_folder(PROFILE)
BASE = os.path.join(ROOT, "models", "base")
SFT_DIR, RL_DIR = os.path.join(OUT, "sft_comt"), os.path.join(OUT, "ccrl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

IN_KERNEL = "ipykernel" in sys.modules
import matplotlib  # noqa: E402

if not IN_KERNEL:
    matplotlib.use("Agg")  # files only; under a kernel the notebook's own backend stays
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

torch.manual_seed(0)
EXAMPLES = []  # (section, question, [show.Example]) for the page
section = lab.Sections(OUT, PROFILE)
save = lambda fig, name: lab.save(fig, OUT, name, IN_KERNEL)


def log_rows(out: str) -> list[dict]:
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


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
    base = load_model(BASE).eval()
    engine = Engine(base, pad_id=pad_id(tok))
    live = make_split("test", 4, seed=1)
    planned = [j.correct for j in greedy_judgements(engine, tok, live, 192, gold_plan=True)]
    own = [j["plan_correct"] for j in own_plan_judgements(engine, tok, live, 192)]
    fig, ax = plt.subplots(figsize=(9, 3))
    for k, (name, r) in enumerate(rows.items()):
        ax.bar([i + 0.27 * (k - 1) for i in range(len(splits))], [r[s] for s in splits], 0.27, label=name)
    ax.plot([0.27 * -1] * len(planned), planned, "k.", label="live: from the gold plan (test)")
    ax.plot([0] * len(own), own, "kx", label="live: own plan right (test)")
    ax.set_xticks(range(len(splits)), splits)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("share of 200 problems")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("the base: executes a handed plan, plans in its own words, never answers the bare question")
    save(fig, "1_base")
    print({name: {s: r[s] for s in splits} for name, r in rows.items()})

# %% [markdown]
# ## 2. The CoMT target and its loss mask, against CoT
#
# **Concept.** CoMT supervises the plan and the `Solution:` marker, nothing after: stage 1 never
# shows an execution. CoT supervises the whole trajectory. **In the code:** `comt/tasks.py`
# (`encode_example`, `comt_target`), `sft_comt.py` (`show_mask`). **Look for:** the shaded
# (supervised) tokens, and how many fewer CoMT has.

# %%
from comt.tasks import encode_example  # noqa: E402
from sft_comt import show_mask  # noqa: E402

with section("2. target and mask"):
    p = make_split("train", 1, seed=0)[0]
    comt_ids, comt_sup = encode_example(tok, p, "comt")
    cot_ids, cot_sup = encode_example(tok, p, "cot")
    supervised = lambda ids, sup: [t for t, s in zip(ids, sup) if s]
    assert supervised(cot_ids, cot_sup)[:sum(comt_sup)] == supervised(comt_ids, comt_sup)  # a prefix of CoT's
    print(show_mask(tok, comt_ids, comt_sup))
    fig, axes = plt.subplots(2, 1, figsize=(12, 2.2))
    for ax, (name, ids, sup) in zip(axes, (("CoMT", comt_ids, comt_sup), ("CoT", cot_ids, cot_sup))):
        ax.imshow([[1.0 if s else 0.15 for s in sup]], aspect="auto", cmap="Oranges", vmin=0, vmax=1)
        ax.set_yticks([0], [f"{name}: {sum(sup)} of {len(ids)}"])
        ax.set_xticks([])
    axes[0].set_title("tokens of one example, supervised ones dark: the prompt, the plan, (CoT only) the execution")
    save(fig, "2_mask")
    many = make_split("train", 200, seed=0)
    per = {f: sum(sum(encode_example(tok, q, f)[1]) for q in many) / len(many) for f in ("comt", "cot")}
    print(f"supervised tokens per example over 200 train problems: CoMT {per['comt']:.1f}, CoT {per['cot']:.1f}")

# %% [markdown]
# ## 3. One SFT step by hand, with replay
#
# **Concept.** The loss is the mean cross-entropy over every supervised token of the global batch;
# replay rows (documents of the base's own corpus) keep the base's execution. **In the code:**
# `sft_comt.py` (`micro_loss_sum`, `train_step`, `replay_examples`), `comt/training.py`
# (`target_logprobs`). **Look for:** the hand sum equals the step's loss; per-token loss along the
# plan falls after a few steps.

# %%
import torch.nn.functional as F  # noqa: E402

from comt import training  # noqa: E402
from sft_comt import collate, micro_loss_sum, replay_examples, train_step  # noqa: E402

with section("3. one SFT step"):
    student = load_model(BASE)
    plans = [encode_example(tok, q, "comt") for q in make_split("train", 6, seed=2)]
    batch = collate(plans + replay_examples(tok, step=0, n=2, seed=0), pad_id(tok))

    def token_loss(ids: torch.Tensor) -> torch.Tensor:  # (B,T-1) cross-entropy of every next token, by hand
        logits = student(ids)[:, :-1]  # (B,T-1,V): position t predicts token t+1
        return -F.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]

    per_token = token_loss(batch.ids)
    hand = per_token[batch.sup[:, 1:]].sum()  # by hand: every supervised token's cross-entropy
    assert torch.allclose(micro_loss_sum(student, batch), hand, rtol=1e-5)
    n_sup = int(batch.sup[:, 1:].sum())
    run = training.Run(args=None, dist=training.Dist(), device=torch.device("cpu"), tok=tok, model=student,
                       opt=torch.optim.AdamW(student.parameters(), lr=5e-4, betas=(0.9, 0.95)))
    before = per_token[0][batch.sup[0, 1:]].detach()
    losses = [train_step(run, [batch], n_sup, grad_clip=1.0)[0] for _ in range(P["hand_steps"])]
    assert abs(losses[0] - hand.item() / n_sup) < 1e-4  # the step's loss is the hand sum over its tokens
    with torch.no_grad():
        after = token_loss(batch.ids[:1])[0]
    fig, ax = plt.subplots(figsize=(10, 2.6))
    ax.plot(before.numpy(), label="before")
    ax.plot(after[batch.sup[0, 1:]].numpy(), label=f"after {len(losses)} steps")
    ax.set_xlabel("supervised token of the first plan")
    ax.set_ylabel("cross-entropy (nats)")
    ax.legend()
    save(fig, "3_sft_step")
    print("loss per step:", [round(x, 3) for x in losses])

# %% [markdown]
# ## 4. Stage 1 for real
#
# **Concept.** `python sft_comt.py`: the CoMT arm at its defaults (in the smoke profile, a few
# steps). **In the code:** `sft_comt.py` (`main`, `sft_step`, `record`, `finish`). **Look for:**
# the loss curve, the summary line (plans on every test answer), and the greedy example.

# %%
with section("4. stage 1"):
    lab.stage("sft_comt.py", P["sft"], SFT_DIR)
    rows = log_rows(SFT_DIR)
    steps, summary = [r for r in rows if "loss" in r and "summary" not in r], rows[-1]
    assert summary["summary"] and summary["format"] == "comt"
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], "o-")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (mean token CE)")
    ax.set_title(f"CoMT-SFT: test {summary.get('test_acc', float('nan')):.0%}, plans "
                 f"{summary.get('plan_rate', float('nan')):.0%}")
    save(fig, "4_stage1")
    print({k: summary[k] for k in ("steps", "final_loss", "test_acc", "plan_rate", "train_seconds") if k in summary})

# %% [markdown]
# ## 5. Sampling a group
#
# **Concept.** GRPO samples G completions of each prompt at temperature 1 and keeps the log-prob of
# every token it sampled. **In the code:** `comt/engine.py` (`Engine.generate`), `ccrl.py`
# (`sample_and_judge`), `comt/training.py` (`target_logprobs`). **Look for:** the P x G grid of right
# and wrong; the sampler's log-probs equal the teacher-forced ones the update will compute.

# %%
from ccrl import sample_and_judge  # noqa: E402
from comt.engine import stop_ids  # noqa: E402
from comt.tasks import encode_prompt  # noqa: E402
from comt.training import target_logprobs  # noqa: E402
from rewards import RewardSettings  # noqa: E402

with section("5. a group"):
    policy = load_model(SFT_DIR).eval()
    policy_engine = Engine(policy, pad_id=pad_id(tok))
    n_prompts, group = P["group"]
    problems = make_split("train", n_prompts, seed=3)
    ro = sample_and_judge(policy_engine, tok, problems, group, 256, 1.0, 1.0, RewardSettings(), seed=0)
    prompt = encode_prompt(tok, problems[0])
    s = policy_engine.generate([prompt], num_samples=1, max_new_tokens=256, temperature=1.0,
                               stop_tokens=stop_ids(tok, policy), seed=0)
    completion, sampled = s.completion(0)  # the sampler's own log-probs of the tokens it drew
    ids = torch.tensor([prompt + completion])
    mask = torch.tensor([[False] * len(prompt) + [True] * len(completion)])
    with torch.no_grad():
        teacher_forced = target_logprobs(policy, ids, mask)  # what the update computes, in one forward
    assert torch.allclose(teacher_forced, torch.tensor(sampled), atol=1e-4)
    fig, ax = plt.subplots(figsize=(group * 0.5 + 1.5, n_prompts * 0.5 + 0.8))
    ax.imshow(ro.correct.float(), cmap="RdYlGn", vmin=0, vmax=1)
    ax.set_xlabel("sample")
    ax.set_ylabel("prompt")
    ax.set_title(f"{n_prompts} prompts x {group} samples: right (green) / wrong (red)")
    save(fig, "5_group")
    print("answers of the first group:", [j.text.strip().splitlines()[-1][:24] for j in ro.judged[:group]])
    gap = (teacher_forced - torch.tensor(sampled)).abs().max()
    print(f"sampled vs teacher-forced log-probs: largest difference {gap:.2e}")

# %% [markdown]
# ## 6. Steps and the confidence of each
#
# **Concept.** A step is an `expr = result` line; its confidence is an aggregate of the
# probabilities of the tokens that wrote its result: geometric mean (the default), minimum or
# product. A step is right when its result is one of the problem's gold intermediate values.
# **In the code:** `rewards.py` (`segment_steps`, `token_spans`, `confidence`, `step_right`,
# `judge`), `comt/show.py` (`marks`). **Look for:** the result tokens, coloured by right/wrong, and
# the recomputed confidences equal the judged ones.

# %%
from comt.show import Example, html_page, render_text  # noqa: E402
from rewards import confidence, judge_completion  # noqa: E402

with section("6. step confidence"):
    j = judge_completion(tok, completion, sampled, problems[0], RewardSettings())
    for k, st in enumerate(j.steps):  # the confidence of each step, recomputed from its token span
        assert math.isclose(confidence(sampled[st.tokens[0]:st.tokens[1]], "geo"), j.step_confs[k], rel_tol=1e-9)
    aggs = {agg: [confidence(sampled[st.tokens[0]:st.tokens[1]], agg) for st in j.steps]
            for agg in ("geo", "min", "prod")}
    probs = [math.exp(x) for x in sampled]
    colours = ["lightgrey"] * len(probs)
    for st, right in zip(j.steps, j.step_rights):
        colours[st.tokens[0]:st.tokens[1]] = ["tab:green" if right else "tab:red"] * (st.tokens[1] - st.tokens[0])
    fig, ax = plt.subplots(figsize=(12, 2.6))
    ax.bar(range(len(probs)), probs, color=colours)
    ax.set_xlabel("completion token")
    ax.set_ylabel("p(token)")
    ax.set_title("one sampled completion: results of steps green (right) or red (wrong), the rest grey")
    save(fig, "6_confidence")
    print(render_text(Example("CoMT-SFT, a sample", problems[0].question, problems[0].answer, j), ansi=False))
    print({agg: [round(c, 3) for c in cs] for agg, cs in aggs.items()})
    EXAMPLES.append(("6. a sampled completion", problems[0].question, [Example("CoMT-SFT", problems[0].question,
                                                                               problems[0].answer, j)]))

# %% [markdown]
# ## 7. The CCRL reward against the outcome reward
#
# **Concept.** r = correct + lambda x T, where T is the mean over the steps written and the gold steps
# never reached of +c (a right step of a right answer), 0 (a right step of a wrong answer), -c (a
# wrong step), each step never reached counting -1; the outcome reward is `correct` alone. Four
# hand-written completions of one problem, scored by the model's own probabilities.
# **In the code:** `rewards.py` (`RewardSettings`, `confidence_term`, `judge`). **Look for:** the
# outcome reward cannot tell the two right completions apart, nor the two wrong ones; CCRL can.

# %%
from comt.tasks import cot_text  # noqa: E402


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
    return {"right, sure": lines, "right, one result as a decimal": unsure, "wrong: last step slips": slip,
            "wrong: stops after one step": stopped}


def scored(model, p, text: str, settings: RewardSettings):
    """Judge a written completion with the model's own (teacher-forced) log-probs of its tokens."""
    prompt = encode_prompt(tok, p)
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    mask = torch.tensor([[False] * len(prompt) + [True] * len(ids)])
    with torch.no_grad():
        lps = target_logprobs(model, torch.tensor([prompt + ids]), mask).tolist()
    return judge_completion(tok, ids, lps, p, settings)


with section("7. CCRL vs outcome"):
    lam, p7 = RewardSettings().weight, problems[0]
    judged = {name: scored(policy, p7, "\n".join(lines), RewardSettings()) for name, lines in variants(p7).items()}
    for name, jj in judged.items():  # the formula by hand, against rewards.judge
        terms = [(c if jj.correct else 0.0) if z else -c for c, z in zip(jj.step_confs, jj.step_rights)]
        terms += [-1.0] * max(0, len(p7.intermediates) - len(jj.steps))
        T = sum(terms) / len(terms) if terms else -1.0
        assert math.isclose(float(jj.correct) + lam * T, jj.reward, rel_tol=1e-9, abs_tol=1e-12), name
    names = list(judged)
    fig, ax = plt.subplots(figsize=(9, 3))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [float(judged[n].correct) for n in names], 0.4, label="correct")
    ax.bar([i - 0.2 for i in x], [lam * judged[n].conf_term for n in names], 0.4,
           bottom=[float(judged[n].correct) for n in names], label="lambda x T (stacked on correct)")
    ax.plot([i - 0.2 for i in x], [judged[n].reward for n in names], "k_", markersize=30, label="CCRL reward")
    ax.bar([i + 0.2 for i in x], [float(judged[n].correct) for n in names], 0.4, label="outcome reward")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(list(x), names, fontsize=8)
    ax.legend(fontsize=7)
    ax.set_title(f"one problem, four completions, lambda {lam}")
    save(fig, "7_rewards")
    for name, jj in judged.items():
        print(f"{name:32s} correct {int(jj.correct)}  T {jj.conf_term:+.3f}  CCRL {jj.reward:+.3f}  outcome "
              f"{int(jj.correct)}  step confidences {[round(c, 3) for c in jj.step_confs]}")
    EXAMPLES.append(("7. four written completions", p7.question,
                     [Example(name, p7.question, p7.answer, jj) for name, jj in judged.items()]))

# %% [markdown]
# ## 8. Group advantages, zero-spread groups and the correctness filter
#
# **Concept.** Each sample's advantage is its reward against its group's: (r - mean) / std with the
# population std. A group whose rewards are all equal teaches nothing and gets exactly 0; with
# `--filter-groups`, groups whose answers are all right or all wrong are dropped (by correctness,
# never by the shaped reward). **In the code:** `rewards.py` (`group_advantages`, `mixed_groups`),
# `ccrl.py` (`advantages_and_filter`). **Look for:** rows summing to 0; the flat row at exactly 0.

# %%
from rewards import group_advantages, mixed_groups  # noqa: E402

with section("8. advantages"):
    R = ro.rewards.clone()  # (P,G) the group of section 5
    R[0] = 0.25  # make the first group's rewards all equal
    A = group_advantages(R)
    by_hand = (R - R.mean(1, keepdim=True)) / (R.std(1, unbiased=False, keepdim=True) + 1e-6)
    assert torch.allclose(A[1:], by_hand[1:]) and torch.equal(A[0], torch.zeros_like(A[0]))
    assert torch.allclose(A.sum(1), torch.zeros(A.shape[0]), atol=1e-4)
    print("groups with right and wrong answers (kept by --filter-groups):", mixed_groups(ro.correct).tolist())
    fig, ax = plt.subplots(figsize=(A.shape[1] * 0.5 + 1.5, A.shape[0] * 0.5 + 0.8))
    im = ax.imshow(A, cmap="coolwarm", vmin=-2, vmax=2)
    fig.colorbar(im)
    ax.set_title("advantages (row 0 forced flat: exactly 0)")
    save(fig, "8_advantages")

# %% [markdown]
# ## 9. One policy update
#
# **Concept.** The loss is a weighted sum over completion tokens of -min(rho A, clip(rho) A); on
# policy (one PPO epoch) rho = 1 exactly and the gradient is the REINFORCE gradient, -sum w A grad
# log p. **In the code:** `ccrl.py` (`make_batches`, `policy_loss`, `policy_update`). **Look for:**
# the two gradients agree; after one step, samples with positive advantage became likelier.

# %%
from ccrl import make_batches, policy_loss, token_logprobs  # noqa: E402

with section("9. one update"):
    learner = load_model(SFT_DIR)
    adv = group_advantages(ro.rewards).flatten().tolist()
    total = (float(sum(len(s) - n for s, n in zip(ro.seqs, ro.prompt_lens))), float(len(ro.seqs)))
    batches = make_batches(ro.seqs, ro.prompt_lens, adv, "token", 256, len(ro.seqs), pad_id(tok), total)
    b = batches[0]
    loss, stats = policy_loss(learner, b, 1.0, 0.2, 0.28)
    assert stats["clipped"] == 0  # rho = exp(logp - logp.detach()) = 1 exactly
    g_ppo = torch.autograd.grad(loss, list(learner.parameters()))
    logp = token_logprobs(learner, b, 1.0)
    per_row = b.comp[:, 1:].sum(1)
    reinforce = -(b.weight.repeat_interleave(per_row) * b.adv.repeat_interleave(per_row) * logp).sum()
    g_pg = torch.autograd.grad(reinforce, list(learner.parameters()))
    assert all(torch.allclose(x, y, atol=1e-7) for x, y in zip(g_ppo, g_pg))

    def sequence_logps() -> torch.Tensor:  # (rows,) summed log-prob of each completion, in batch order
        with torch.no_grad():
            return torch.stack([lp.sum() for lp in token_logprobs(learner, b, 1.0).split(per_row.tolist())])

    before = sequence_logps()
    opt = torch.optim.SGD(learner.parameters(), lr=0.5)
    for p_, g in zip(learner.parameters(), g_ppo):
        p_.grad = g
    opt.step()
    delta = sequence_logps() - before
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.scatter(b.adv, delta)
    ax.axhline(0, color="k", lw=0.5)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("advantage")
    ax.set_ylabel("change in log p(completion)")
    ax.set_title("one SGD step on the policy loss")
    save(fig, "9_update")

# %% [markdown]
# ## 10. Stage 2 for real
#
# **Concept.** `python ccrl.py --init <stage 1>`: the five steps above, repeated (shortened in the
# class profile). **In the code:** `ccrl.py` (`rl_step`, `record`, `step_metrics`). **Look for:**
# the reward and its two parts, sample accuracy, overconfident step errors, confidence on right vs
# wrong steps, and how many groups had no reward spread.

# %%
with section("10. stage 2"):
    lab.stage("ccrl.py", ["--init", SFT_DIR, *P["rl"]], RL_DIR)
    rows = log_rows(RL_DIR)
    steps = [r for r in rows if "reward" in r and "summary" not in r]
    evals = [r for r in rows if r.get("eval")]
    keys = [("reward", "correct_part", "conf_part"), ("acc",), ("overconf_err",), ("conf_right", "conf_wrong"),
            ("zero_spread",)]
    fig, axes = plt.subplots(1, len(keys), figsize=(15, 2.6))
    for ax, ks in zip(axes, keys):
        for k in ks:
            ax.plot([r["step"] for r in steps], [r[k] for r in steps], label=k)
        ax.legend(fontsize=7)
        ax.set_xlabel("step")
    save(fig, "10_stage2")
    print("greedy test accuracy at each evaluation:", [(r["step"], r["acc"]) for r in evals])
    print(open(os.path.join(RL_DIR, "examples.txt")).read()[:1200])

# %% [markdown]
# ## 11. Before and after
#
# **Concept.** The same problems for the base (from the gold plan: its ceiling), CoMT-SFT and CCRL:
# accuracy, plans right and followed, overconfident step errors; then the committed three-seed
# experiment with its intervals, including what does not reproduce. **In the code:** `evaluate.py`
# (its tables, JSON and reliability diagrams), `experiment.py`. **Look for:** where CCRL gains,
# and whether its step confidences moved toward their accuracy.

# %%
def share(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


with section("11. before and after"):
    n, stem = str(P["eval_n"]), os.path.join(OUT, "eval")
    common = ["--splits", "test,ood_template", "--n", n, "--max-new-tokens", "256"]
    res = {**lab.evaluation([BASE], ["--gold-plan", *common], f"{stem}_base.json")["results"],
           **lab.evaluation([SFT_DIR, RL_DIR], common, f"{stem}_stages.json")["results"]}
    names = {"base": "base (gold plan)", os.path.basename(SFT_DIR): "CoMT-SFT", os.path.basename(RL_DIR): "CCRL"}
    for split in ("test", "ood_template"):
        print(split)
        for key, label in names.items():
            r = res[key][split]
            print(f"  {label:18s} acc {share(r['acc'])}  plan right {share(r.get('plan_correct'))}  followed "
                  f"{share(r.get('plan_followed'))}  overconfident step errors {share(r.get('overconf_err'))}")
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.imshow(plt.imread(f"{stem}_stages_reliability.png"))
    ax.axis("off")
    save(fig, "11_reliability")
    ok_sft = res[os.path.basename(SFT_DIR)]["test"]["per_problem"]["ok"]
    ok_rl = res[os.path.basename(RL_DIR)]["test"]["per_problem"]["ok"]
    differ = next((i for i, (a, b) in enumerate(zip(ok_sft, ok_rl)) if a != b), 0)
    q = make_split("test", int(n), seed=0)[differ]
    shown = [Example(label, q.question, q.answer,
                     greedy_judgements(Engine(load_model(d).eval(), pad_id=pad_id(tok)), tok, [q], 256)[0])
             for label, d in (("CoMT-SFT", SFT_DIR), ("CCRL", RL_DIR))]
    for e in shown:
        print(render_text(e, ansi=False))
    EXAMPLES.append(("11. a test problem where the two differ", q.question, shown))
    committed = os.path.join(ROOT, "results", "default.md")
    if os.path.isfile(committed):
        text = open(committed).read()
        start = text.find("What the default reproduces")  # the generated reading, claim by claim
        print(text[max(start, 0):][:3000])

# %% [markdown]
# ## 12. Where next
#
# The baselines are flags: `sft_comt.py --format cot` (CoT-SFT), `ccrl.py --reward outcome`
# (outcome-only GRPO). The reward's switches (`--conf-weight`, `--conf-form brier`, `--conf-agg min`,
# `--step-check arith`, `--plan-weight`) and the update's (`--filter-groups`, `--ppo-epochs`,
# `--kl-coef`) are one flag each; `python experiment.py` runs the four arms over three seeds with
# paired intervals; `walkthrough/exercises.py` holds exercises with checkers.

# %%
with section("12. where next"):
    page = os.path.join(OUT, "examples.html")
    lab.write_page(page, html_page("CoMT and CCRL, the walkthrough's marked examples", EXAMPLES, []))
    print(f"marked examples: {page}; figures: {os.path.join(OUT, 'figures')}; seconds: {section.seconds}")
