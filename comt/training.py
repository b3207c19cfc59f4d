"""
The per-step math both training stages (sft_comt.py, ccrl.py) run, one banner each: the run record
and the optimiser's flags; token rows (micro-batches of similar length, one masked log-prob); the
update (backward over micro-batches, then one optimiser step: the one place where ranks meet the
gradient); the books of a step (seconds, the wait for a core, tokens). The processes themselves
(torchrun, --shard, gathered copies, memory flags) are comt/parallel.py's.
"""
import argparse
import contextlib
import glob
import math
import time
from dataclasses import dataclass, field

import torch

from comt.flags import COUNT, NONNEG_INT, POSITIVE, flag
from comt.parallel import Dist, as_many_as_any_rank

# -----------------------------------------------------------------------------
# The run record and the optimiser's flags


@dataclass(frozen=True)
class Schedule:
    """The optimiser's flags (AdamW, betas 0.9 and 0.95): a linear warm-up, then a cosine decay to 10%
    of the peak at the last step; the gradient norm clipped every step."""
    lr: float = flag(1e-4, "peak learning rate", type=POSITIVE)
    warmup: int = flag(5, "warm-up steps", type=NONNEG_INT)
    grad_clip: float = flag(1.0, "clip the gradient norm to this", type=POSITIVE)
    steps: int = flag(100, "optimiser steps (the schedule's length)", type=COUNT)


@dataclass(kw_only=True)
class Run:
    """What a stage's step and loop read; sft_comt.Run and ccrl.Run add their stage's own."""
    args: argparse.Namespace  # the parsed flags, for set-up and the books; a step reads its records instead
    dist: Dist
    device: torch.device
    tok: object
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    schedule: Schedule
    seed: int = 0  # the data order (and, in stage 2, the sampling)
    autocast: object = contextlib.nullcontext()  # the autocast context of --dtype (off under --shard)
    sharded: bool = False  # the model is split over the ranks (FSDP2, --shard); else whole on every rank
    ref: torch.nn.Module | None = None  # a reference policy whose log-probs the loss also reads (stage 2's KL)
    totals: dict = field(default_factory=dict)  # counts and seconds carried in the checkpoint
    log_path: object = None  # lifecycle.RunLog on the main rank, None elsewhere
    script: str = ""  # the script's file name, recorded in the run directory
    checks: dict = field(default_factory=dict)  # fingerprints of the inputs (lifecycle.CHECKS)
    first: int = 0  # the first step this process takes (the checkpoint's, on --resume)
    bar: object = None  # the loop's progress bar (lifecycle.steps)
    stop: object = None  # its stop request (lifecycle.StopRequest)


# -----------------------------------------------------------------------------
# Token rows: micro-batches of similar length, one padder and one masked log-prob for SFT and RL


def length_groups(lengths: list[int], max_rows: int) -> list[list[int]]:
    """Row indices split into micro-batches of at most max_rows rows of similar length, shortest
    first. The split minimises the padded cells (rows x longest row, summed) plus, for every
    micro-batch, one longest row of the whole batch: a micro-batch of its own only pays for rows
    that would otherwise pad a lot (a long replay document among short examples, say).

    >>> length_groups([20, 4, 19, 5], max_rows=2)
    [[1, 3], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    L = [lengths[i] for i in order]
    cost, cut = [0] + [math.inf] * len(L), [0] * (len(L) + 1)  # best split of the first j rows
    for j in range(1, len(L) + 1):
        for i in range(max(0, j - max_rows), j):
            c = cost[i] + (j - i) * L[j - 1] + L[-1]
            if c < cost[j]:
                cost[j], cut[j] = c, i
    groups, j = [], len(L)
    while j:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


def pad_rows(rows: list[list[int]], masks: list[list[bool]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), both (B,T) with T the longest row: rows right-padded with `pad`, mask True at the
    tokens trained on (each predicted from the tokens before it), False on the padding.

    >>> pad_rows([[5, 6, 7], [8]], [[False, True, True], [True]], pad=0)
    (tensor([[5, 6, 7],
            [8, 0, 0]]), tensor([[False,  True,  True],
            [ True, False, False]]))
    """
    T = max(map(len, rows))
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.bool)
    for r, (x, m) in enumerate(zip(rows, masks)):
        ids[r, :len(x)] = torch.tensor(x)
        mask[r, :len(m)] = torch.tensor(m)
    return ids, mask


def token_batches(rows: list[list[int]], masks: list[list[bool]], max_rows: int, pad: int) -> list[tuple]:
    """The rows as micro-batches of similar length (length_groups): (the rows' indices, ids (B,T),
    mask (B,T)) each."""
    return [(g, *pad_rows([rows[r] for r in g], [masks[r] for r in g], pad))
            for g in length_groups(list(map(len, rows)), max_rows)]


def target_logprobs(model, ids: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(N,) log-probs of the masked tokens of ids (B,T), row-major, under softmax(logits / temperature),
    each from the tokens before it. Right padding needs no attention mask: real tokens never attend
    to the pads after them; logits are computed only where a target is."""
    target = mask[:, 1:]  # (B,T-1): position t predicts token t+1
    logits = model(ids[:, :-1], logits_mask=target)  # (N,V)
    return torch.log_softmax(logits / temperature, -1).gather(-1, ids[:, 1:][target][:, None])[:, 0]


# -----------------------------------------------------------------------------
# The update. Ranks: every rank takes every world-th row of the global batch (Dist.share) and runs
# the same loss, a sum over the whole global batch with global weights; the gradients are then
# summed over the ranks. Whole model on every rank: each backward leaves this rank's part, and
# sum_grads adds the parts up. Sharded (FSDP2): each backward reduces over the ranks itself, as an
# average, so the loss is scaled by the world size first; and since every forward is a collective,
# every rank runs as many micro-batches as any other (even_out pads with batches that train nothing).
# One process is the world of one. The stages call update and never ask which case they are in.


def update(run: Run, batches: list, loss_fn, step: int, empty, epochs: int = 1, temperature: float = 1.0):
    """`epochs` optimiser steps on this rank's micro-batches (each with .ids and .mask, (B,T)): per
    micro-batch the masked log-probs under softmax(logits / temperature) (and the reference's, with
    run.ref), loss_fn(batch, logp, ref_logp) -> (loss, stats) and its backward; then optimizer_step.
    With more than one epoch, each batch's log-probs before the update are kept first, as
    batch.old_logp (the ratio's denominator). `empty`: a batch that trains nothing (even_out).
    Returns (the stats summed over micro-batches and epochs, the last gradient norm)."""
    batches, stats, norm = even_out(batches, empty, run), {}, 0.0
    logprobs = lambda model, b: target_logprobs(model, b.ids, b.mask, temperature)
    if epochs > 1:
        with torch.no_grad(), run.autocast:
            for b in batches:
                b.old_logp = logprobs(run.model, b)
    for _ in range(epochs):
        for b in batches:
            with run.autocast:
                logp = logprobs(run.model, b)
                with torch.no_grad():
                    ref_logp = logprobs(run.ref, b) if run.ref is not None else None
                loss, st = loss_fn(b, logp, ref_logp)
            backward(loss, run)
            for k, v in st.items():
                stats[k] = stats.get(k, 0) + v
        norm = optimizer_step(run, step)
    return stats, norm


def optimizer_step(run: Run, step: int) -> float:
    """The end of every update of both stages: the gradients summed over the ranks, the learning rate
    of `step` set, the norm clipped; a non-finite norm stops the run before the weights change (the
    last checkpoint stays as it was); then the step. Returns the norm before clipping."""
    sum_grads(run)
    s = run.schedule
    for g in run.opt.param_groups:
        g["lr"] = cosine_lr(step, s.steps, s.lr, s.warmup)
    norm = clip_grads(run.model, s.grad_clip)
    if not math.isfinite(norm):
        raise SystemExit(f"non-finite gradient ({norm}) at step {step}: stopping before the update; the last "
                         f"checkpoint in {run.args.out} is untouched (try a lower --lr)")
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    return norm


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 10% of `peak` at `total`.

    >>> [round(cosine_lr(s, total=10, peak=1.0, warmup=2), 3) for s in (0, 1, 2, 6, 10)]
    [0.5, 1.0, 1.0, 0.55, 0.1]
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def clip_grads(model, max_norm: float) -> float:
    """Clip the gradient norm (over every rank's shards when sharded) to max_norm; returns the norm
    before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if hasattr(norm, "full_tensor"):  # a DTensor: the shards' partial norms, combined
        norm = norm.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm.item()


def even_out(batches: list, empty, run: Run) -> list:
    """Sharded: `batches` padded with `empty` (a batch that trains nothing) to as many as any rank
    holds. Otherwise as they are."""
    return as_many_as_any_rank(batches, empty, run.dist) if run.sharded else batches


def backward(loss: torch.Tensor, run: Run):
    """Backward of this rank's part of a loss summed over the global batch (see the banner)."""
    (loss * run.dist.world if run.sharded else loss).backward()


def sum_grads(run: Run):
    """After a step's backward passes, give every rank the gradient of the whole global batch. A
    parameter no row reached (a rank or step with nothing to train on) gets zeros, so the optimiser
    step is the same as if those rows had run. Sharded, the backward passes have already reduced."""
    if run.sharded:
        return
    for p in run.model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        run.dist.sum(p.grad)


# -----------------------------------------------------------------------------
# The books of a step: seconds, the wait for a core, tokens


class Laps:
    """Seconds since the start of a step at named marks: laps = Laps(); ...; laps.mark("sample"); and
    the seconds this process's threads spent waiting for a core meanwhile (waited())."""

    def __init__(self):
        self.t0, self.at, self.w0 = time.time(), {}, cpu_wait_seconds()

    def mark(self, name: str):
        self.at[name] = time.time() - self.t0

    def total(self) -> float:
        return time.time() - self.t0

    def waited(self) -> float | None:
        now = cpu_wait_seconds()
        return None if now is None or self.w0 is None else now - self.w0


def cpu_wait_seconds() -> float | None:
    """Seconds this process's threads have spent runnable but waiting for a core (the kernel's
    run-queue delay, /proc/self/task/*/schedstat, summed over threads); None where the kernel does not
    say (not Linux). Another job on the same cores makes it grow; a run alone keeps it near 0."""
    total, found = 0, False
    for path in glob.glob("/proc/self/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[1])
            found = True
        except (OSError, IndexError, ValueError):  # a thread that ended meanwhile
            continue
    return total / 1e9 if found else None


def add_time(totals: dict, seconds: float, waited: float | None):
    """Add a step's seconds and its threads' wait for a core to a run's totals (the wait stays None
    once the kernel could not say)."""
    totals["seconds"] += seconds
    totals["wait_seconds"] = None if waited is None or totals["wait_seconds"] is None else \
        totals["wait_seconds"] + waited


COST = ("train_tokens", "forward_tokens", "seconds")  # what a run has spent so far (totals keys)


def cost_so_far(totals: dict) -> dict:
    """What a run has spent so far, for its eval lines: tokens through a forward and backward pass
    (training), tokens through a forward pass only (sampling, old and reference log-probs) and
    seconds of its steps (its checks left out)."""
    return {k: round(totals[k], 1) if isinstance(totals[k], float) else totals[k] for k in COST}


SHARED = 0.1  # a run whose threads waited for a core this share of their time shared the machine


def contention(wait_seconds: float | None, seconds: float, threads: int | None = None) -> dict:
    """For a summary: the share of the run's compute threads' time (seconds x `threads`, torch's by
    default) spent waiting for a core, and whether that marks the machine as shared (above SHARED);
    both None where the kernel does not say.

    >>> contention(0.2, 10.0, threads=2), contention(9.0, 10.0, threads=2)["shared_machine"]
    ({'cpu_wait_share': 0.01, 'shared_machine': False}, True)
    """
    if wait_seconds is None or seconds <= 0:
        return dict(cpu_wait_share=None, shared_machine=None)
    share = wait_seconds / (seconds * (threads or torch.get_num_threads()))
    return dict(cpu_wait_share=round(share, 3), shared_machine=share > SHARED)
