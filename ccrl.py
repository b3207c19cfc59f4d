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
       loses w when the completion does not open with a digit-free plan. These settings are one
       record (rewards.RewardSettings), saved with the run's arguments: evaluate.py --show reads it;
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
    Under --shard (FSDP2) each rank samples its prompts from a full copy of the weights in the compute
    dtype, refreshed from the shards before every step and evaluation (gather_s in the log), and
    trains the sharded model; the KL reference is sharded too.
    Greedy accuracy on --eval-n problems of --eval-split (`test`, or `val` to choose settings on) is
    measured before the first step, every --eval-every steps and at the end, each an eval line with
    what the run has spent so far. Every step's log line counts its tokens exactly: prompt (each
    prompt prefilled once), sampled, trained (forward and backward of the rows the update runs) and
    update forward (old and reference log-probs); the summary adds them up and says whether the
    run's threads waited for a core (another job on the machine: its seconds then mean little).
    Checkpoints, --resume and signals work as in sft_comt.py. With
    --log-examples K, K sampled completions per step go to OUT/examples.txt with every numeric
    step marked by its confidence and right/wrong and the parts of the reward the update used (the
    same judgement, rendered by comt/show.py), so the change of behaviour during RL can be read.

Deviations from the paper: the reward formula, the confidence aggregation and the step check are
our reconstruction (see rewards.py); the RL optimiser is plain GRPO with the options above. Budgets
are sized for a laptop CPU.
"""
import argparse
import copy
import functools
import math
from dataclasses import dataclass, field, fields

import torch
from tqdm import tqdm

from comt import training
from comt.common import (COUNT, NONNEG, NONNEG_INT, POSITIVE, SEED, SHARE, check_checkpoint, checkpoint_id, load_model,
                         log_json, number, pad_id, pick_dtype, seed_everything)
from comt.engine import Engine, stop_ids
from comt.evaluation import greedy_judgements
from comt.lifecycle import (RunLog, StopRequest, add_run_args, begin_run, claim_and_log, fingerprint, given_flags,
                            restore_train_state, save_or_stop, save_run)
from comt.show import Example, render_text, visible
from comt.tasks import RECIPES, encode_prompt, make_split, problems_for_cli, prompts_that_fit
from comt.training import (Dist, Laps, add_time, all_reduce_sum, autocast_for, backward, clip_grads, close_distributed,
                           contention, cosine_lr, cost_so_far, even_out, gathered_copy, length_groups, my_share,
                           pad_rows, peak_memory, refresh_copy, refuse_bad_memory_flags, set_lr, shard_model,
                           sum_grads, target_logprobs)
from rewards import Judgement, RewardSettings, group_advantages, judge_completion, mixed_groups, step_stats

SCRIPT = "ccrl.py"


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


def sample_and_judge(engine, tok, problems: list, group_size: int, max_new_tokens: int, temperature: float,
                     top_p: float, reward: RewardSettings, seed: int) -> Rollout:
    """G completions per problem, each judged once (rewards.judge_completion): the same record gives
    the update its reward and the logged examples their marks and reward parts."""
    prompts = [encode_prompt(tok, p) for p in problems]
    s = engine.generate(prompts, num_samples=group_size, max_new_tokens=max_new_tokens, temperature=temperature,
                        top_p=top_p, stop_tokens=stop_ids(tok, engine.model), seed=seed)
    seqs, plens, judged = [], [], []
    for r in range(s.tokens.shape[0]):
        p, prompt = problems[int(s.prompt_index[r])], prompts[int(s.prompt_index[r])]
        ids, lps = s.completion(r)
        judged.append(judge_completion(tok, ids, lps, p, reward))
        seqs.append(prompt + ids)
        plens.append(len(prompt))
    return Rollout(seqs, plens, judged, group_size, sum(map(len, prompts)), int(s.mask.sum()), problems)


# -----------------------------------------------------------------------------
# 4. advantages: per group, optionally only groups with right and wrong answers


@dataclass
class Kept:
    """Step 4's output: which samples train, with what advantage, under which loss totals."""
    groups: torch.Tensor  # (P,) bool: the group passed --filter-groups (all True without it)
    rows: list[int]  # flat sample indices that enter the update
    adv: list[float]  # their advantages
    totals: tuple[float, float]  # (completion tokens, sequences) of all kept samples over all ranks


def advantages_and_filter(ro: Rollout, mode: str, filter_groups: bool, keep_zero: bool, device,
                          dist: Dist) -> Kept:
    """Group advantages (`mode`: zscore or mean); with filter_groups only groups with right and wrong
    answers stay. Rows of advantage 0 add nothing to the gradient without KL and are left out unless
    keep_zero (the totals still count them)."""
    rewards = ro.rewards
    adv = group_advantages(rewards, mode).flatten()  # (P*G,)
    groups = mixed_groups(ro.correct) if filter_groups else torch.ones(rewards.shape[0], dtype=torch.bool)
    rows = [r for r in range(adv.numel()) if groups[r // ro.group_size]]
    kept_tokens = float(sum(len(ro.seqs[r]) - ro.prompt_lens[r] for r in rows))
    totals = all_reduce_sum(torch.tensor([kept_tokens, float(len(rows))], device=device), dist).tolist()
    rows = [r for r in rows if keep_zero or adv[r] != 0]
    return Kept(groups, rows, adv[rows].tolist(), tuple(totals))


# -----------------------------------------------------------------------------
# 5. update: the clipped policy-gradient loss (+ KL), over micro-batches, ppo-epochs times


@dataclass
class RolloutBatch:
    """One micro-batch of the update."""
    ids: torch.Tensor  # (B,T) prompt + completion, right-padded
    comp: torch.Tensor  # (B,T) bool: completion token (predicted from the tokens before it)
    adv: torch.Tensor  # (B,) advantage of each sequence
    weight: torch.Tensor  # (B,) loss-aggregation weight of each of the sequence's tokens
    old_logp: torch.Tensor | None = None  # (N,) log-probs of the completion tokens before the update

    def to(self, device) -> "RolloutBatch":
        return RolloutBatch(self.ids.to(device), self.comp.to(device), self.adv.to(device), self.weight.to(device))


def make_batches(seqs, prompt_lens, adv, agg: str, max_new: int, micro: int, pad: int,
                 totals: tuple) -> list[RolloutBatch]:
    """Micro-batches of the kept samples, rows of similar length together (training.length_groups);
    totals = (all completion tokens, all sequences) of the step over every rank, for the
    loss-aggregation weights (the loss is a weighted sum, so the grouping does not change the update)."""
    n_tok, n_seq = totals
    out = []
    for rows in length_groups(list(map(len, seqs)), micro):
        comp = [[False] * prompt_lens[r] + [True] * (len(seqs[r]) - prompt_lens[r]) for r in rows]
        n = [len(seqs[r]) - prompt_lens[r] for r in rows]
        w = [{"token": 1 / n_tok, "seq": 1 / (k * n_seq), "const": 1 / (n_seq * max_new)}[agg] for k in n]
        out.append(RolloutBatch(*pad_rows([seqs[r] for r in rows], comp, pad),
                                torch.tensor([adv[r] for r in rows], dtype=torch.float), torch.tensor(w)))
    return out


def token_logprobs(model, b: RolloutBatch, temperature: float) -> torch.Tensor:
    """(N,) log-probs of the completion tokens under softmax(logits / temperature), row-major."""
    return target_logprobs(model, b.ids, b.comp, temperature)


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy:
    k1 = log p - log q; k3 = q/p - log(q/p) - 1 (unbiased, never negative)."""
    d = ref_logp - logp
    if kind == "k1":
        return -d
    if kind == "k3":
        return torch.exp(d) - d - 1
    raise ValueError(f"unknown KL estimator {kind!r}; choose k1 or k3")


def policy_loss(model, b: RolloutBatch, temperature: float, clip_low: float, clip_high: float, ref=None,
                kl_coef: float = 0.0, kl_est: str = "k3") -> tuple[torch.Tensor, dict]:
    """Weighted sum over this micro-batch's completion tokens of the clipped PG loss (+ KL to ref)."""
    logp = token_logprobs(model, b, temperature)
    old = logp.detach() if b.old_logp is None else b.old_logp
    ratio = torch.exp(logp - old)
    per_row = b.comp[:, 1:].sum(1)  # (B,) completion tokens per row
    adv, w = b.adv.repeat_interleave(per_row), b.weight.repeat_interleave(per_row)  # (N,)
    clipped = torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    loss = -torch.minimum(ratio * adv, clipped * adv)
    stats = dict(clipped=((ratio < 1 - clip_low) | (ratio > 1 + clip_high)).float().sum().item(),
                 kl=0.0, tokens=float(len(logp)))
    if ref is not None:
        with torch.no_grad():
            ref_logp = token_logprobs(ref, b, temperature)
        kl = kl_estimate(logp, ref_logp, kl_est)
        loss = loss + kl_coef * kl
        stats["kl"] = kl.detach().sum().item()
    return (w * loss).sum(), stats


@dataclass(frozen=True)
class UpdateSettings:
    """Step 5's settings, read once from the flags of the same names."""
    loss_agg: str  # token, seq or const: the loss normaliser
    max_new_tokens: int  # (the const normaliser's length)
    micro_batch: int  # sequences per forward/backward
    ppo_epochs: int  # passes over the step's samples
    temperature: float  # of the log-probs, as sampled
    clip_low: float
    clip_high: float
    kl_coef: float  # beta (0: no reference model)
    kl_est: str
    grad_clip: float

    @classmethod
    def from_flags(cls, args) -> "UpdateSettings":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def policy_update(run: "Run", ro: Rollout, kept: Kept, u: UpdateSettings, step: int) -> tuple[dict, float]:
    """u.ppo_epochs optimiser steps on the kept samples; returns (summed loss stats, gradient norm), the
    stats counting the tokens run: train_tokens through forward and backward (every kept row, prompt
    included, each epoch), forward_tokens through a forward only (old log-probs, the KL reference).
    How the ranks share the work is comt/training.py's (even_out, backward, sum_grads)."""
    stats, norm = dict(clipped=0.0, kl=0.0, tokens=0.0), 0.0
    row_tokens = sum(len(ro.seqs[r]) for r in kept.rows)
    stats.update(train_tokens=float(row_tokens * u.ppo_epochs),
                 forward_tokens=float(row_tokens * ((u.ppo_epochs > 1) + u.ppo_epochs * (run.ref is not None))))
    if kept.totals[1] == 0:
        return stats, norm
    batches = make_batches([ro.seqs[r] for r in kept.rows], [ro.prompt_lens[r] for r in kept.rows], kept.adv,
                           u.loss_agg, u.max_new_tokens, u.micro_batch, run.pad, kept.totals)
    empty = RolloutBatch(torch.full((1, 2), run.pad), torch.tensor([[False, True]]), torch.zeros(1), torch.zeros(1))
    batches = even_out([b.to(run.device) for b in batches], empty.to(run.device), run)  # (weight 0: trains nothing)
    if u.ppo_epochs > 1:
        with torch.no_grad(), run.autocast:
            for b in batches:
                b.old_logp = token_logprobs(run.model, b, u.temperature)
    for epoch in range(u.ppo_epochs):
        for b in batches:
            with run.autocast:
                loss, st = policy_loss(run.model, b, u.temperature, u.clip_low, u.clip_high, run.ref, u.kl_coef,
                                       u.kl_est)
            backward(loss, run)
            for k in st:
                stats[k] += st[k]
        sum_grads(run)
        norm = clip_grads(run.model, u.grad_clip)
        if not math.isfinite(norm):
            raise SystemExit(f"non-finite gradient ({norm}) at step {step}: stopping before the update; the "
                             f"last checkpoint in {run.args.out} is untouched (try a lower --lr or --kl-coef)")
        run.opt.step()
        run.opt.zero_grad(set_to_none=True)
    return stats, norm


# -----------------------------------------------------------------------------
# One step: the five above, in order


@dataclass(kw_only=True)
class Run(training.Run):
    """The RL run: the common record (training.Run), its reward and update settings, the KL reference,
    the sampling engine and the data; totals: seconds, sample_seconds and the evaluations."""
    reward: RewardSettings
    update: UpdateSettings
    pad: int = 0
    ref: torch.nn.Module | None = None  # the initial policy, for --kl-coef > 0
    engine: Engine | None = None  # decodes the model, or under --shard a full copy of it (refreshed by sync_sampler)
    problems: list = field(default_factory=list)  # the training problems
    checked: list = field(default_factory=list)  # the --eval-split slice of the greedy evaluations


@dataclass
class StepFacts:
    """What one RL step did on this rank (the loop keeps the books and writes the log)."""
    rollout: Rollout
    kept: Kept
    stats: dict  # the update's summed loss statistics: clipped, kl, tokens
    grad_norm: float


def rl_step(run: Run, step: int, laps: Laps) -> StepFacts:
    """One step of the header's algorithm on this rank's share of the step's prompts."""
    args = run.args
    sync_sampler(run)
    laps.mark("gather")
    # 1. prompts
    idx = my_share(step_problems(step, len(run.problems), args.prompts_per_step, args.seed), run)
    # 2-3. sample a group per prompt, judge every sample
    run.model.eval()
    ro = sample_and_judge(run.engine, run.tok, [run.problems[i] for i in idx], args.group_size, args.max_new_tokens,
                          args.temperature, args.top_p, run.reward,
                          seed=args.seed * 1_000_003 + step * 97 + run.dist.rank)
    laps.mark("sample")
    # 4. advantages
    kept = advantages_and_filter(ro, args.adv, args.filter_groups, args.kl_coef > 0, run.device, run.dist)
    # 5. update
    run.model.train()
    set_lr(run.opt, cosine_lr(step, args.steps, args.lr, args.warmup))
    stats, norm = policy_update(run, ro, kept, run.update, step)
    return StepFacts(ro, kept, stats, norm)


def sync_sampler(run: Run) -> float:
    """Sharded: gather the current weights into the sampling copy (every rank); the seconds."""
    return refresh_copy(run.engine.model, run.model) if run.sharded else 0.0


# -----------------------------------------------------------------------------
# Evaluation and logging: greedy checks on test, the books of the run, the log line, the summary


def plan_and_step_stats(judged: list[Judgement], threshold: float) -> dict:
    """The share of completions that open with a plan, and step-confidence statistics (rewards.step_stats)."""
    return dict(plan_rate=sum(j.plan for j in judged) / len(judged),
                **step_stats([j.step_confs for j in judged], [j.step_rights for j in judged], threshold))


def greedy_eval(engine, tok, problems, max_new_tokens: int, reward: RewardSettings, threshold: float) -> dict:
    """Greedy accuracy on `problems` (comt.evaluation.greedy_judgements), the share of outputs with a
    plan, the mean completion length and step-confidence statistics."""
    judged = greedy_judgements(engine, tok, problems, max_new_tokens, settings=reward)
    n = len(judged)
    stats = plan_and_step_stats(judged, threshold)
    return dict(acc=sum(j.correct for j in judged) / n, plan_rate=stats.pop("plan_rate"),
                mean_len=sum(j.tokens for j in judged) / n, **stats)


def log_greedy_eval(run: Run, step: int):
    """Greedy accuracy and step calibration on the --eval-split slice, logged with the run's cost so far
    and kept for the summary."""
    if not run.checked:
        return
    sync_sampler(run)  # (every rank)
    if run.dist.main:
        run.model.eval()
        res = greedy_eval(run.engine, run.tok, run.checked, run.args.max_new_tokens, run.reward,
                          run.args.overconf_threshold)
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
    if run.dist.main:
        log_examples(logged_examples(facts.rollout, args.log_examples), step, args.out)
    ro, kept, stats = every_rank(facts.rollout, facts.kept, facts.stats, run.dist)
    spent = dict(prompt_tokens=ro.prompt_tokens, sampled_tokens=ro.completion_tokens,
                 train_tokens=int(stats["train_tokens"]), update_forward_tokens=int(stats["forward_tokens"]))
    for k, v in spent.items():
        totals[k] += v
    totals["forward_tokens"] += spent["prompt_tokens"] + spent["sampled_tokens"] + spent["update_forward_tokens"]
    row = step_metrics(step, ro, kept, stats, facts.grad_norm, run.opt.param_groups[0]["lr"], seconds, sampled,
                       args.overconf_threshold, args.reward == "ccrl")
    return dict(row, **spent, **({"gather_s": round(laps.at["gather"], 3)} if run.sharded else {}))


def every_rank(ro: Rollout, kept: Kept, stats: dict, dist: Dist) -> tuple[Rollout, Kept, dict]:
    """The step's judged samples, kept groups and update statistics of all ranks together (each rank
    holds its share of the prompts), so that the log describes the whole step."""
    if dist.world == 1:
        return ro, kept, stats
    import torch.distributed
    parts = [None] * dist.world
    torch.distributed.all_gather_object(parts, (ro.judged, ro.prompt_tokens, ro.completion_tokens,
                                                kept.groups.tolist(), stats))
    judged = [j for p in parts for j in p[0]]
    return (Rollout([], [], judged, ro.group_size, sum(p[1] for p in parts), sum(p[2] for p in parts), []),
            Kept(torch.tensor([g for p in parts for g in p[3]]), [], [], kept.totals),
            {k: sum(p[4][k] for p in parts) for k in stats})


def step_metrics(step: int, ro: Rollout, kept: Kept, stats: dict, norm: float, lr: float, seconds: float,
                 sample_seconds: float, threshold: float, ccrl: bool) -> dict:
    """The step's log line: reward and accuracy of the samples, calibration of their steps, the update."""
    r, c = ro.rewards, ro.correct.float()
    row = dict(step=step, reward=r.mean().item(), acc=c.mean().item(),
               zero_spread=(r.std(1, unbiased=False) == 0).float().mean().item(),
               kept_groups=kept.groups.float().mean().item(), resp_len=ro.completion_tokens / r.numel(),
               **plan_and_step_stats(ro.judged, threshold),
               kl=stats["kl"] / max(stats["tokens"], 1), clip_frac=stats["clipped"] / max(stats["tokens"], 1),
               grad_norm=norm, lr=lr, tokens_per_s=ro.completion_tokens / seconds, sample_s=sample_seconds,
               train_s=seconds - sample_seconds)
    if ccrl:
        row.update(correct_part=c.mean().item(), conf_part=r.mean().item() - c.mean().item())
    return {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in row.items()}


def logged_examples(ro: Rollout, k: int) -> list[Example]:
    """--log-examples: the first sample of each of the first k prompts, as judged."""
    return [Example(f"problem {p.id}, sample 1 of {ro.group_size}", p.question, p.answer, ro.judged[i * ro.group_size])
            for i, p in enumerate(ro.problems[:k])]


def log_examples(examples: list, step: int, out: str):
    """Append a step's --log-examples samples to OUT/examples.txt, steps marked by confidence."""
    if examples:
        with open(RunLog(out, "examples.txt"), "a") as f:
            f.write("".join(f"=== step {step}: {visible(e.question)}\n{render_text(e, ansi=False)}\n"
                            for e in examples))


def summary(run: Run) -> dict:
    args, ev = run.args, run.totals["evals"]
    t = run.totals
    out = dict(summary=True, reward=args.reward, init=args.init, out=args.out, steps=args.steps,
               **{k: t[k] for k in ("prompt_tokens", "sampled_tokens", "train_tokens", "update_forward_tokens",
                                    "forward_tokens")},
               train_seconds=round(t["seconds"], 1), sample_share=round(t["sample_seconds"] / max(t["seconds"], 1e-9), 3))
    out.update(**contention(t["wait_seconds"], t["seconds"]), **peak_memory(run.device))
    if ev:
        out.update(eval_split=args.eval_split, acc_before=ev[0]["acc"], acc_after=ev[-1]["acc"], plan_rate_before=ev[0]["plan_rate"],
                   plan_rate_after=ev[-1]["plan_rate"], overconf_before=ev[0]["overconf_err"],
                   overconf_after=ev[-1]["overconf_err"])
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
    # reward: one record, rewards.RewardSettings, whose defaults these are
    ap.add_argument("--reward", choices=("ccrl", "outcome"), default=RewardSettings.kind,
                    help="ccrl: correctness + confidence term; outcome: correctness only (the baseline)")
    ap.add_argument("--conf-weight", type=NONNEG, default=RewardSettings.weight,
                    help="lambda, the weight of the confidence term")
    ap.add_argument("--conf-form", choices=("signed", "brier"), default=RewardSettings.form, help="+c/-c or -(c-z)^2")
    ap.add_argument("--conf-agg", choices=("geo", "min", "prod"), default=RewardSettings.agg,
                    help="confidence of a number from its tokens' probabilities")
    ap.add_argument("--step-check", choices=("auto", "arith", "gold", "outcome"), default=RewardSettings.check,
                    help="a step is right if its result is a gold intermediate (gold; auto where the problem has "
                    "them) / its arithmetic recomputes (arith; auto otherwise) / the final answer is right (outcome)")
    ap.add_argument("--plan-weight", type=NONNEG, default=RewardSettings.plan_weight, help="format term of both "
                    "rewards: subtract this from a completion that does not open with a digit-free plan")
    ap.add_argument("--overconf-threshold", type=SHARE, default=0.9, help="confidence above which a wrong step "
                    "counts as an overconfident error")
    # sampling
    ap.add_argument("--group-size", type=number(int, lo=2), default=8, help="G, completions per prompt")
    ap.add_argument("--prompts-per-step", type=COUNT, default=8, help="prompts per step (over all ranks)")
    ap.add_argument("--temperature", type=POSITIVE, default=1.0, help="sampling temperature (also used for training "
                    "log-probs and confidences)")
    ap.add_argument("--top-p", type=number(above=0, hi=1), default=1.0,
                    help="nucleus sampling (1: off; <1 biases the ratio)")
    ap.add_argument("--max-new-tokens", type=COUNT, default=256, help="completion length limit (the longest "
                    "default test response, plan included, is about 215 tokens)")
    # update
    ap.add_argument("--adv", choices=("zscore", "mean"), default="zscore", help="group advantage normalisation")
    ap.add_argument("--filter-groups", action="store_true", help="train only on groups with right and wrong answers")
    ap.add_argument("--loss-agg", choices=("token", "seq", "const"), default="token", help="loss normaliser")
    ap.add_argument("--ppo-epochs", type=COUNT, default=1, help="passes over each step's samples (1: on-policy)")
    ap.add_argument("--clip-low", type=number(lo=0, below=1), default=0.2, help="PPO ratio clip below 1")
    ap.add_argument("--clip-high", type=NONNEG, default=0.28, help="PPO ratio clip above 1")
    ap.add_argument("--kl-coef", type=NONNEG, default=0.0, help="beta, weight of KL to the initial policy")
    ap.add_argument("--kl-est", choices=("k1", "k3"), default="k3", help="KL estimator")
    ap.add_argument("--lr", type=POSITIVE, default=1e-4, help="peak learning rate")
    ap.add_argument("--warmup", type=NONNEG_INT, default=5, help="warm-up steps")
    ap.add_argument("--grad-clip", type=POSITIVE, default=1.0, help="clip the gradient norm to this")
    ap.add_argument("--micro-batch", type=COUNT, default=32, help="sequences per forward/backward")
    ap.add_argument("--steps", type=COUNT, default=100, help="RL steps")
    ap.add_argument("--seed", type=SEED, default=0, help="seed for prompts and sampling")
    # runtime
    add_run_args(ap, save_every=50)
    ap.add_argument("--eval-every", type=COUNT, default=50, help="steps between greedy evaluations (each a log line "
                    "with the tokens spent so far)")
    ap.add_argument("--eval-n", type=NONNEG_INT, default=200, help="problems of --eval-split per evaluation (0: none)")
    ap.add_argument("--eval-split", choices=("test", "val"), default="test", help="the split the evaluations answer "
                    "(val to choose settings on)")
    ap.add_argument("--log-examples", type=NONNEG_INT, default=0, help="write K sampled completions per step (the "
                    "first sample of the first K prompts) to OUT/examples.txt, each numeric step marked by its "
                    "confidence and right/wrong, with the reward parts")
    return ap


def parse_args(argv=None):
    args = parser().parse_args(argv)
    args.out = args.out or ("runs/ccrl" if args.reward == "ccrl" else "runs/grpo")
    return args


def set_up(args, dist: Dist, device, state: dict | None) -> Run:
    """The run: the policy (from --init, or the checkpoint on --resume), the data, sharding as asked,
    the optimiser (restored on --resume), the sampler and the claimed run directory with its log."""
    src, flag = (args.out, "--out") if state else (args.init, "--init")
    tok = check_checkpoint(src, flag, "; run `python sft_comt.py` first")
    if args.prompts_per_step % dist.world:
        raise SystemExit(f"--prompts-per-step {args.prompts_per_step} must be divisible by the {dist.world} ranks")
    seed_everything(args.seed)
    problems = problems_for_cli(args.data, args.n_train, args.limit, args.seed)
    checked = make_split(args.eval_split, args.eval_n, args.seed) if args.eval_n and args.data in RECIPES else []
    model = load_model(src, device=device, dtype=torch.float32)
    ctx = model.config.max_position_embeddings
    problems = prompts_that_fit(tok, problems, args.max_new_tokens, ctx, "training problems")
    checked = prompts_that_fit(tok, checked, args.max_new_tokens, ctx, f"{args.eval_split} problems") if checked \
        else checked
    ref, checks = None, dict(data=fingerprint([(p.id, p.question, p.answer) for p in problems]),
                             init=state["checks"].get("init") if state else checkpoint_id(args.init))
    if args.kl_coef > 0:  # the reference is the initial policy, not the checkpoint
        ref = (load_model(args.init, device=device) if state else copy.deepcopy(model)).eval().requires_grad_(False)
        checks["reference"] = fingerprint(ref)
    refuse_bad_memory_flags(args, device, SCRIPT)
    model.grad_checkpoint, compute, sampler = args.grad_checkpoint, pick_dtype(args.dtype, device), model
    if args.shard:  # each rank samples from a full copy in the compute dtype; the reference is sharded too
        shard_model(model, device, compute, args.offload)
        sampler = gathered_copy(model, True, device, compute)
        ref = shard_model(ref, device, compute, args.offload) if ref is not None else None
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    totals = dict(seconds=0.0, sample_seconds=0.0, wait_seconds=0.0, prompt_tokens=0, sampled_tokens=0, train_tokens=0,
                  update_forward_tokens=0, forward_tokens=0, evals=[])
    if state:
        totals.update(restore_train_state(state, opt, model, args.out)[1])
    return Run(args=args, dist=dist, device=device, tok=tok, model=model, opt=opt, autocast=autocast_for(args, device),
               sharded=args.shard, totals=totals, log_path=claim_and_log(args, SCRIPT, state, dist, checks),
               script=SCRIPT, checks=checks, reward=RewardSettings.from_flags(vars(args)),
               update=UpdateSettings.from_flags(args), pad=pad_id(tok), ref=ref,
               engine=Engine(sampler, pad_id=pad_id(tok)), problems=problems, checked=checked)


@training.one_voice
def main(argv=None):
    args = parse_args(argv)
    args, dist, device, state = begin_run(args, SCRIPT, given_flags(parser(), argv))
    run = set_up(args, dist, device, state)
    start = state["step"] if state else 0
    if dist.main:
        print(f"{args.reward} RL from {args.out if state else args.init}: {len(run.problems):,} problems, "
              f"{args.steps} steps x {args.prompts_per_step} prompts x {args.group_size} samples, {device}, "
              f"{dist.world} rank(s)")
    if start == 0:
        log_greedy_eval(run, 0)
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc=f"rl {args.reward}",
               disable=not dist.main)
    stop = StopRequest()
    for step in bar:
        laps = Laps()
        row = record(run, step, rl_step(run, step, laps), laps)
        if dist.main:
            log_json(row, run.log_path)
        bar.set_postfix(reward=f"{row['reward']:.3f}", acc=f"{row['acc']:.2f}", len=f"{row['resp_len']:.0f}")
        done = step + 1
        if done % args.eval_every == 0 or done == args.steps:
            log_greedy_eval(run, done)
        save_or_stop(done, args, stop, dist, device, lambda step: save_run(run, step), SCRIPT)
    bar.close()
    if dist.main:
        log_json(summary(run), run.log_path)
    close_distributed(dist)


if __name__ == "__main__":
    main()
