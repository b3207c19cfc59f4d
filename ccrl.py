"""
Stage 2: Confidence-Calibrated RL (CCRL), GRPO-style, or outcome-only GRPO (the paper's baseline)
with --reward outcome.

    python ccrl.py --init runs/sft_comt                                   # CCRL -> runs/ccrl
    python ccrl.py --init runs/sft_cot --reward outcome --out runs/grpo   # baseline
    python ccrl.py --init runs/sft_comt --resume                          # continue runs/ccrl
    torchrun --nproc_per_node 2 ccrl.py --init runs/sft_comt              # prompts split over ranks
    torchrun --nproc_per_node 8 ccrl.py --init DIR --shard ...            # FSDP2 (see sft_comt.py)

Algorithm, one step
    1. draw --prompts-per-step training problems (a seeded shuffle; the position is the step);
    2. sample --group-size completions of each with the engine at --temperature, keeping the
       per-token log-probs;
    3. judge each (rewards.judge): correctness of the final `Answer:` line, plus for ccrl
       --conf-weight times T, the mean over the numeric steps written and the gold steps never
       reached of +c/-c (signed; 0 for a right step of a wrong answer) or -(c-z)^2 (brier), a
       step never reached counting -1, where c is the policy's confidence in the step's written
       result and z whether the step is right (--step-check); with --plan-weight w, either reward
       loses w without a digit-free plan (the flags: rewards.RewardSettings, saved with the run);
    4. advantages per group (z-score or mean-only); with --filter-groups, drop groups whose
       samples are all right or all wrong (binary correctness, never the shaped reward);
    5. update: loss = sum over completion tokens of w * (-min(rho*A, clip(rho, 1-eps_low,
       1+eps_high)*A) + beta*KL), rho = exp(logp - logp_old) under softmax(logits/temperature).
       On-policy (--ppo-epochs 1) rho is exactly 1 and this is the policy gradient; more epochs
       reuse the samples with the clipped ratio. w is the --loss-agg normaliser: token (1 / all
       completion tokens), seq (1 / (tokens of the sequence * sequences)), const (1 / (sequences *
       max new tokens)). Computed over the whole step, so micro-batching does not change it.
       Optional KL to the initial policy (k1 or k3 estimator, --kl-coef, 0 by default). Without
       KL, rows whose advantage is 0 (every group with no reward spread) add exactly nothing to the
       gradient, so they are not run at all (the normalisers still count them).
    Under --shard (FSDP2) each rank samples from a full copy of the weights, refreshed from the shards
    before every step and check (gather_s in the log); the KL reference is sharded too.

Books: greedy accuracy on --eval-n problems of --eval-split before the first step, every
--eval-every steps and at the end, each an eval line with what the run has spent so far; every
step's log line counts its tokens exactly (prompt, sampled, trained, update forward). With
--log-examples K, K samples per step go to OUT/examples.txt, their steps marked (comt/show.py).

Deviations from the paper: the reward formula, the confidence aggregation and the step check are
our reconstruction (see rewards.py); the RL optimiser is plain GRPO with the options above. Budgets
are sized for a laptop CPU.
"""
import argparse
import copy
import functools
from dataclasses import dataclass, field

import torch

from comt import lifecycle, training
from comt.benchmarks import problems_for_cli
from comt.checkpoint import RunLog
from comt.common import check_checkpoint, checkpoint_id, load_model, log_json, pad_id, pick_dtype, seed_everything
from comt.engine import Engine, stop_ids
from comt.evaluation import Checks, greedy_judgements, greedy_summary, sample_metrics
from comt.flags import COUNT, NONNEG, NONNEG_INT, POSITIVE, SEED, SHARE, add_flags, flag, from_flags, number
from comt.lifecycle import add_run_args, begin_run, fingerprint, given_flags
from comt.parallel import gathered_copy, one_voice, peak_memory, refresh_copy, shard_model
from comt.show import Example, append_examples
from comt.tasks import RECIPES, encode_prompt, make_split, prompts_that_fit
from comt.training import Laps, add_time, contention, cosine_lr, cost_so_far, token_batches
from rewards import Judgement, RewardSettings, group_advantages, judge_completion, mixed_groups

SCRIPT = "ccrl.py"
TOKENS = ("prompt_tokens", "sampled_tokens", "train_tokens", "update_forward_tokens", "forward_tokens")  # the books


# -----------------------------------------------------------------------------
# 1. prompts: consecutive slices of seeded per-epoch shuffles (a pure function of the step)


@functools.lru_cache(maxsize=2)
def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()


def step_problems(step: int, n: int, per_step: int, seed: int) -> list[int]:
    """Problem indices of a step: consecutive slices of seeded per-epoch shuffles."""
    return [epoch_order(n, seed, k // n)[k % n] for k in range(step * per_step, (step + 1) * per_step)]


# -----------------------------------------------------------------------------
# 2-3. sample a group per prompt and judge every sample (rewards.py)


@dataclass(frozen=True)
class Sampling:
    """Steps 1-2's flags: how many prompts and samples, and how they are drawn."""
    prompts_per_step: int = flag(8, "prompts per step (over all ranks)", type=COUNT)
    group_size: int = flag(8, "G, completions per prompt", type=number(int, lo=2))
    temperature: float = flag(1.0, "sampling temperature (also used for training log-probs and confidences)",
                              type=POSITIVE)
    top_p: float = flag(1.0, "nucleus sampling (1: off; <1 biases the ratio)", type=number(above=0, hi=1))
    max_new_tokens: int = flag(256, "completion length limit (the longest default test response, plan included, "
                               "is about 215 tokens)", type=COUNT)


@dataclass
class Rollout:
    """Steps 2-3's output on this rank: the samples, judged; prompt-major (G samples of each prompt)."""
    seqs: list[list[int]]  # prompt + completion (stop token included) per sample
    prompt_lens: list[int]
    judged: list[Judgement]  # each sample judged once, with the run's RewardSettings
    group_size: int
    prompt_tokens: int  # prefilled: each prompt once, whatever the group size
    completion_tokens: int  # sampled, the stop tokens included
    problems: list  # the prompts' problems, one per group

    @property
    def rewards(self) -> torch.Tensor:  # (P,G)
        return torch.tensor([j.reward for j in self.judged]).view(-1, self.group_size)

    @property
    def correct(self) -> torch.Tensor:  # (P,G) bool
        return torch.tensor([j.correct for j in self.judged]).view(-1, self.group_size)


def sample_and_judge(engine, tok, problems: list, s: Sampling, scoring: RewardSettings, seed: int) -> Rollout:
    """G completions per problem, each judged once (rewards.judge_completion): the same record gives
    the update its reward and the logged examples their marks and reward parts."""
    prompts = [encode_prompt(tok, p) for p in problems]
    out = engine.generate(prompts, num_samples=s.group_size, max_new_tokens=s.max_new_tokens,
                          temperature=s.temperature, top_p=s.top_p, stop_tokens=stop_ids(tok, engine.model), seed=seed)
    seqs, plens, judged = [], [], []
    for r in range(out.tokens.shape[0]):
        p, prompt = problems[int(out.prompt_index[r])], prompts[int(out.prompt_index[r])]
        ids, lps = out.completion(r)
        judged.append(judge_completion(tok, ids, lps, p, scoring))
        seqs.append(prompt + ids)
        plens.append(len(prompt))
    return Rollout(seqs, plens, judged, s.group_size, sum(map(len, prompts)), int(out.mask.sum()), problems)


# -----------------------------------------------------------------------------
# 4. advantages: per group, optionally only groups with right and wrong answers


@dataclass(frozen=True)
class Update:
    """Steps 4-5's flags: the advantages, which groups train, the loss and how it is run."""
    adv: str = flag("zscore", "group advantage normalisation", choices=("zscore", "mean"))
    filter_groups: bool = flag(False, "train only on groups with right and wrong answers")
    loss_agg: str = flag("token", "loss normaliser", choices=("token", "seq", "const"))
    ppo_epochs: int = flag(1, "passes over each step's samples (1: on-policy)", type=COUNT)
    clip_low: float = flag(0.2, "PPO ratio clip below 1", type=number(lo=0, below=1))
    clip_high: float = flag(0.28, "PPO ratio clip above 1", type=NONNEG)
    kl_coef: float = flag(0.0, "beta, weight of KL to the initial policy", type=NONNEG)
    kl_est: str = flag("k3", "KL estimator", choices=("k1", "k3"))
    micro_batch: int = flag(32, "sequences per forward/backward", type=COUNT)


@dataclass
class Kept:
    """Step 4's output: which samples train, with what advantage, under which loss totals."""
    groups: torch.Tensor  # (P,) bool: the group passed --filter-groups (all True without it)
    rows: list[int]  # flat sample indices that enter the update
    adv: list[float]  # their advantages
    totals: tuple[float, float]  # (completion tokens, sequences) of all kept samples over all ranks


def advantages_and_filter(ro: Rollout, u: Update, device, dist) -> Kept:
    """Group advantages (u.adv: zscore or mean); with u.filter_groups only groups with right and wrong
    answers stay. Rows of advantage 0 add nothing to the gradient without KL and are left out (the
    totals still count them)."""
    rewards = ro.rewards
    adv = group_advantages(rewards, u.adv).flatten()  # (P*G,)
    groups = mixed_groups(ro.correct) if u.filter_groups else torch.ones(rewards.shape[0], dtype=torch.bool)
    rows = [r for r in range(adv.numel()) if groups[r // ro.group_size]]
    kept_tokens = float(sum(len(ro.seqs[r]) - ro.prompt_lens[r] for r in rows))
    totals = dist.sum(torch.tensor([kept_tokens, float(len(rows))], device=device)).tolist()
    rows = [r for r in rows if u.kl_coef > 0 or adv[r] != 0]
    return Kept(groups, rows, adv[rows].tolist(), tuple(totals))


# -----------------------------------------------------------------------------
# 5. update: the clipped policy-gradient loss (+ KL), over micro-batches, ppo-epochs times


@dataclass
class RolloutBatch:
    """One micro-batch of the update."""
    ids: torch.Tensor  # (B,T) prompt + completion, right-padded
    mask: torch.Tensor  # (B,T) bool: completion token (predicted from the tokens before it)
    adv: torch.Tensor  # (B,) advantage of each sequence
    weight: torch.Tensor  # (B,) loss-aggregation weight of each of the sequence's tokens
    old_logp: torch.Tensor | None = None  # (N,) log-probs of the completion tokens before the update (training.update)


def make_batches(seqs, prompt_lens, adv, agg: str, max_new: int, micro: int, pad: int, totals: tuple,
                 device="cpu") -> list[RolloutBatch]:
    """Micro-batches of the kept samples on `device`, rows of similar length together (training.token_batches);
    totals = (all completion tokens, all sequences) of the step over every rank, for the
    loss-aggregation weights (the loss is a weighted sum, so the grouping does not change the update)."""
    n_tok, n_seq = totals
    comp = [[False] * n + [True] * (len(s) - n) for s, n in zip(seqs, prompt_lens)]
    out = []
    for rows, ids, mask in token_batches(seqs, comp, micro, pad):
        w = [{"token": 1 / n_tok, "seq": 1 / (k * n_seq), "const": 1 / (n_seq * max_new)}[agg]
             for k in (len(seqs[r]) - prompt_lens[r] for r in rows)]
        out.append(RolloutBatch(ids.to(device), mask.to(device), torch.tensor([adv[r] for r in rows],
                                dtype=torch.float, device=device), torch.tensor(w, device=device)))
    return out


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token KL(policy || reference) from its samples: k1 = log p - log q; k3 = q/p - log(q/p) - 1 (>= 0)."""
    d = ref_logp - logp
    if kind == "k1":
        return -d
    if kind == "k3":
        return torch.exp(d) - d - 1
    raise ValueError(f"unknown KL estimator {kind!r}; choose k1 or k3")


def policy_loss(b: RolloutBatch, logp: torch.Tensor, ref_logp: torch.Tensor | None, u: Update) -> tuple:
    """Weighted sum over this micro-batch's completion tokens (logp: their log-probs, (N,)) of the
    clipped PG loss (+ KL to the reference's log-probs ref_logp); the statistics of the step's log."""
    old = logp.detach() if b.old_logp is None else b.old_logp
    ratio = torch.exp(logp - old)
    per_row = b.mask[:, 1:].sum(1)  # (B,) completion tokens per row
    adv, w = b.adv.repeat_interleave(per_row), b.weight.repeat_interleave(per_row)  # (N,)
    clipped = torch.clamp(ratio, 1 - u.clip_low, 1 + u.clip_high)
    loss = -torch.minimum(ratio * adv, clipped * adv)
    stats = dict(clipped=((ratio < 1 - u.clip_low) | (ratio > 1 + u.clip_high)).float().sum().item(),
                 kl=0.0, tokens=float(len(logp)))
    if ref_logp is not None:
        kl = kl_estimate(logp, ref_logp, u.kl_est)
        loss = loss + u.kl_coef * kl
        stats["kl"] = kl.detach().sum().item()
    return (w * loss).sum(), stats


def policy_update(run: "Run", ro: Rollout, kept: Kept, step: int) -> tuple[dict, float]:
    """u.ppo_epochs optimiser steps on the kept samples (training.update): (summed loss stats, gradient
    norm), the stats counting the tokens run through forward and backward (train_tokens: every kept
    row, prompt included, each epoch) and through a forward only (forward_tokens: old and KL log-probs)."""
    u, s = run.update, run.sampling
    stats, norm = dict(clipped=0.0, kl=0.0, tokens=0.0), 0.0
    row_tokens = sum(len(ro.seqs[r]) for r in kept.rows)
    stats.update(train_tokens=float(row_tokens * u.ppo_epochs),
                 forward_tokens=float(row_tokens * ((u.ppo_epochs > 1) + u.ppo_epochs * (run.ref is not None))))
    if kept.totals[1] == 0:
        return stats, norm
    batches = make_batches([ro.seqs[r] for r in kept.rows], [ro.prompt_lens[r] for r in kept.rows], kept.adv,
                           u.loss_agg, s.max_new_tokens, u.micro_batch, run.pad, kept.totals, run.device)
    empty = make_batches([[run.pad] * 2], [1], [0.0], "token", 1, 1, run.pad, (float("inf"), 1), run.device)[0]
    summed, norm = training.update(run, batches, lambda b, logp, ref_logp: policy_loss(b, logp, ref_logp, u), step,
                                   empty, u.ppo_epochs, s.temperature)  # (empty: advantage and weight 0)
    return {k: v + summed.get(k, 0.0) for k, v in stats.items()}, norm


# -----------------------------------------------------------------------------
# One step: the five above, in order


@dataclass(kw_only=True)
class Run(training.Run):
    """The RL run: the common record (training.Run, with the KL reference), each step's flags, the data."""
    sampling: Sampling
    scoring: RewardSettings
    update: Update
    pad: int = 0
    engine: Engine | None = None  # decodes the model, or under --shard a full copy of it (refreshed by sampler)
    problems: list = field(default_factory=list)  # the training problems
    checked: list = field(default_factory=list)  # the --eval-split slice of the greedy evaluations


@dataclass
class StepFacts:
    """What one RL step did on this rank (the loop keeps the books and writes the log)."""
    rollout: Rollout
    kept: Kept
    stats: dict  # the update's summed loss statistics: clipped, kl, tokens, train_tokens, forward_tokens
    grad_norm: float


def rl_step(run: Run, step: int, laps: Laps) -> StepFacts:
    """One step of the header's algorithm on this rank's share of the step's prompts."""
    s = run.sampling
    # 1. prompts
    idx = run.dist.share(step_problems(step, len(run.problems), s.prompts_per_step, run.seed))
    # 2-3. sample a group per prompt from the current weights, judge every sample
    engine = sampler(run)
    laps.mark("gather")
    ro = sample_and_judge(engine, run.tok, [run.problems[i] for i in idx], s, run.scoring,
                          seed=run.seed * 1_000_003 + step * 97 + run.dist.rank)
    laps.mark("sample")
    # 4. advantages
    kept = advantages_and_filter(ro, run.update, run.device, run.dist)
    # 5. update
    run.model.train()
    stats, norm = policy_update(run, ro, kept, step)
    return StepFacts(ro, kept, stats, norm)


def sampler(run: Run) -> Engine:
    """The engine on the current policy (under --shard its full copy, refreshed first: every rank calls it)."""
    if run.sharded:
        refresh_copy(run.engine.model, run.model)
    run.model.eval()
    return run.engine


# -----------------------------------------------------------------------------
# Evaluation and logging: greedy checks, the books of the run, the log line, the summary


def log_greedy_eval(run: Run, step: int):
    """Greedy accuracy and step calibration on the --eval-split slice (every rank calls it), logged with
    the run's cost so far and kept for the summary."""
    engine = sampler(run) if run.checked else None
    if run.checked and run.dist.main:
        res = greedy_summary(greedy_judgements(engine, run.tok, run.checked, run.sampling.max_new_tokens,
                                               scoring=run.scoring), run.args.overconf_threshold)
        res = dict(eval=True, step=step, split=run.args.eval_split, **{k: round(v, 4) for k, v in res.items()},
                   **cost_so_far(run.totals))
        run.totals["evals"].append(res)
        log_json(res, run.log_path)


def record(run: Run, step: int, facts: StepFacts, laps: Laps) -> dict:
    """The loop's books for one step (every rank calls it: the log gathers all ranks' samples): the
    totals, the examples file and the log line."""
    args, seconds, sampled, totals = run.args, laps.total(), laps.at["sample"], run.totals
    add_time(totals, seconds, laps.waited())
    totals["sample_seconds"] += sampled
    if run.dist.main and args.log_examples:  # the first sample of each of the first K prompts, as judged
        ro = facts.rollout
        append_examples(RunLog(args.out, "examples.txt"), [
            Example(f"problem {p.id}, sample 1 of {ro.group_size}", p.question, p.answer, ro.judged[i * ro.group_size])
            for i, p in enumerate(ro.problems[:args.log_examples])], step)
    ro, kept, stats = every_rank(facts, run.dist)
    spent = dict(prompt_tokens=ro.prompt_tokens, sampled_tokens=ro.completion_tokens,
                 train_tokens=int(stats["train_tokens"]), update_forward_tokens=int(stats["forward_tokens"]))
    for k, v in spent.items():
        totals[k] += v
    totals["forward_tokens"] += spent["prompt_tokens"] + spent["sampled_tokens"] + spent["update_forward_tokens"]
    lr = cosine_lr(step, run.schedule.steps, run.schedule.lr, run.schedule.warmup)  # (this step's, updated or not)
    row = sample_metrics(step, ro.rewards, ro.correct, ro.judged, kept.groups, ro.completion_tokens, stats,
                         facts.grad_norm, lr, seconds, sampled, args.overconf_threshold, run.scoring.reward == "ccrl")
    return dict(row, **spent, **({"gather_s": round(laps.at["gather"], 3)} if run.sharded else {}))


def every_rank(facts: StepFacts, dist) -> tuple[Rollout, Kept, dict]:
    """The step's judged samples, kept groups and update statistics of all ranks: the log's whole step."""
    ro, kept = facts.rollout, facts.kept
    judged, prompt, sampled, groups, stats = zip(*dist.gather((ro.judged, ro.prompt_tokens, ro.completion_tokens,
                                                               kept.groups.tolist(), facts.stats)))
    return (Rollout([], [], sum(judged, []), ro.group_size, sum(prompt), sum(sampled), []),
            Kept(torch.tensor(sum(groups, [])), [], [], kept.totals),
            {k: sum(s[k] for s in stats) for k in facts.stats})


def summary(run: Run) -> dict:
    args, t, ev = run.args, run.totals, run.totals["evals"]
    out = dict(summary=True, reward=args.reward, init=args.init, out=args.out, steps=run.schedule.steps,
               **{k: t[k] for k in TOKENS}, train_seconds=round(t["seconds"], 1),
               sample_share=round(t["sample_seconds"] / max(t["seconds"], 1e-9), 3),
               **contention(t["wait_seconds"], t["seconds"]), **peak_memory(run.device))
    if ev:
        out.update(eval_split=args.eval_split, acc_before=ev[0]["acc"], acc_after=ev[-1]["acc"],
                   plan_rate_before=ev[0]["plan_rate"], plan_rate_after=ev[-1]["plan_rate"],
                   overconf_before=ev[0]["overconf_err"], overconf_after=ev[-1]["overconf_err"])
    return out


# -----------------------------------------------------------------------------
# Set-up and main


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="Stage 2: CCRL (or outcome-only GRPO with --reward outcome).",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--init", default="runs/sft_comt", help="checkpoint directory to start from (a stage-1 output)")
    ap.add_argument("--out", default=None, help="output directory (default runs/ccrl, or runs/grpo for outcome)")
    ap.add_argument("--data", default="train", help="a synthetic split, a benchmark (gsm8k:train), or a JSONL path")
    ap.add_argument("--n-train", type=COUNT, default=8000, help="problems of a synthetic split")
    ap.add_argument("--limit", type=COUNT, default=None, help="use only the first N rows of real data")
    ap.add_argument("--seed", type=SEED, default=0, help="seed for prompts and sampling")
    add_flags(ap, RewardSettings, "reward (rewards.RewardSettings)")
    add_flags(ap, Sampling, "sampling")
    add_flags(ap, Update, "update")
    add_flags(ap, training.Schedule, "optimisation")
    add_run_args(ap, save_every=50)
    add_flags(ap, Checks, "greedy checks (before the first step and at the end too)")
    ap.add_argument("--overconf-threshold", type=SHARE, default=0.9, help="confidence above which a wrong step "
                    "counts as an overconfident error")
    ap.add_argument("--log-examples", type=NONNEG_INT, default=0, help="write the first sample of each of the first "
                    "K prompts of every step to OUT/examples.txt, steps marked by confidence, with the reward parts")
    return ap


def parse_args(argv=None):
    args = parser().parse_args(argv)
    args.out = args.out or ("runs/ccrl" if args.reward == "ccrl" else "runs/grpo")
    return args


def load_start(args, device, state: dict | None) -> tuple:
    """(tokenizer, policy, reference or None, training and check problems, input fingerprints): from
    --init or, on --resume, the checkpoint; the reference is the initial policy (--kl-coef > 0)."""
    src, flag_name = (args.out, "--out") if state else (args.init, "--init")
    tok = check_checkpoint(src, flag_name, "; run `python sft_comt.py` first")
    seed_everything(args.seed)
    problems = problems_for_cli(args.data, args.n_train, args.limit, args.seed)
    checked = make_split(args.eval_split, args.eval_n, args.seed) if args.eval_n and args.data in RECIPES else []
    model = load_model(src, device=device, dtype=torch.float32)
    ctx = model.config.max_position_embeddings
    problems = prompts_that_fit(tok, problems, args.max_new_tokens, ctx, "training problems")
    checked = checked and prompts_that_fit(tok, checked, args.max_new_tokens, ctx, f"{args.eval_split} problems")
    checks = dict(data=fingerprint([(p.id, p.question, p.answer) for p in problems]),
                  init=state["checks"].get("init") if state else checkpoint_id(args.init))
    ref = None
    if args.kl_coef > 0:
        ref = (load_model(args.init, device=device) if state else copy.deepcopy(model)).eval().requires_grad_(False)
        checks["reference"] = fingerprint(ref)
    return tok, model, ref, problems, checked, checks


def set_up(args, dist, device, state: dict | None) -> Run:
    """The run: policy, reference and data (load_start), what both stages share (lifecycle.start),
    then the sampler: under --shard a full copy of the policy in the compute dtype, and the
    reference sharded too."""
    if args.prompts_per_step % dist.world:
        raise SystemExit(f"--prompts-per-step {args.prompts_per_step} must be divisible by the {dist.world} ranks")
    tok, model, ref, problems, checked, checks = load_start(args, device, state)
    totals = dict(seconds=0.0, sample_seconds=0.0, wait_seconds=0.0, **dict.fromkeys(TOKENS, 0), evals=[])
    run = lifecycle.start(Run, args, SCRIPT, dist, device, state, model=model, tok=tok, checks=checks, totals=totals,
                          sampling=from_flags(Sampling, args), scoring=from_flags(RewardSettings, args),
                          update=from_flags(Update, args), pad=pad_id(tok), problems=problems, checked=checked)
    compute = pick_dtype(args.dtype, device)
    run.ref = shard_model(ref, device, compute, args.offload) if args.shard and ref is not None else ref
    run.engine = Engine(gathered_copy(model, True, device, compute) if args.shard else model, pad_id=run.pad)
    if dist.main:
        print(f"{args.reward} RL from {args.out if state else args.init}: {len(problems):,} problems, {args.steps} "
              f"steps x {args.prompts_per_step} prompts x {args.group_size} samples, {device}, {dist.world} rank(s)")
    return run


@one_voice
def main(argv=None):
    run = set_up(*begin_run(parse_args(argv), SCRIPT, given_flags(parser(), argv)))
    args = run.args  # (on --resume, the checkpoint's)
    if run.first == 0:
        log_greedy_eval(run, 0)
    for step in lifecycle.steps(run, f"rl {args.reward}"):
        laps = Laps()
        row = record(run, step, rl_step(run, step, laps), laps)
        lifecycle.log_row(run, row, reward=f"{row['reward']:.3f}", acc=f"{row['acc']:.2f}",
                          len=f"{row['resp_len']:.0f}")
        done = step + 1
        if args.eval_every and done % args.eval_every == 0 or done == run.schedule.steps:
            log_greedy_eval(run, done)
        lifecycle.checkpoint_or_stop(run, done)
    lifecycle.end(run, summary(run) if run.dist.main else None)


if __name__ == "__main__":
    main()
