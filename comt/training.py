"""
What the two training stages (sft_comt.py, ccrl.py) share, one banner each: torchrun set-up; the run
record; ranks (the one place where a step's work is split over ranks and its gradients summed, for
both stages); token rows (one padder, one masked log-prob); the optimiser's schedule, clipping and
autocast; FSDP2 sharding (--shard).
"""
import argparse
import contextlib
import glob
import math
import os
import time
from dataclasses import dataclass, field

import torch

from comt.common import pick_device, pick_dtype


# -----------------------------------------------------------------------------
# Distributed (torchrun)

@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str = "auto") -> tuple[Dist, torch.device]:
    """Under torchrun (RANK/WORLD_SIZE set): join the process group (nccl on GPU, gloo on CPU) and
    take this rank's GPU. Otherwise a single process."""
    device = pick_device(device_name)
    if "RANK" not in os.environ:
        return Dist(), device
    import torch.distributed as dist
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size()), device


def all_reduce_sum(x: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world > 1:
        import torch.distributed as dist
        dist.all_reduce(x)
    return x


def main_decides(d: Dist, decide):
    """Run decide() on the main rank only (it reads or claims the run directory); a refusal there
    (SystemExit) is raised on every rank, so that no rank is left waiting at a collective for one
    that has gone."""
    refusal = None
    if d.main:
        try:
            decide()
        except SystemExit as e:
            refusal = e.code
    if d.world > 1:
        import torch.distributed as dist
        box = [refusal]
        dist.broadcast_object_list(box, src=0)
        refusal = box[0]
    if refusal is not None:
        raise SystemExit(refusal)


def one_voice(main):
    """Decorate a training script's main: under torchrun a refusal (SystemExit with a message, raised
    alike on every rank) is printed by rank 0 alone; the other ranks exit with status 1 silently."""
    import functools

    @functools.wraps(main)
    def run(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except SystemExit as e:
            if isinstance(e.code, str) and int(os.environ.get("RANK", "0")) > 0:
                raise SystemExit(1) from None
            raise
    return run


def barrier(d: Dist):
    if d.world > 1:
        import torch.distributed as dist
        dist.barrier()


def as_many_as_any_rank(items: list, filler, d: Dist) -> list:
    """items padded with filler to the longest list any rank holds (FSDP2: every forward is a
    collective, so each rank must run as many)."""
    most = torch.tensor(len(items))
    if d.world > 1:
        import torch.distributed as dist
        dist.all_reduce(most, op=dist.ReduceOp.MAX)
    return items + [filler] * (int(most) - len(items))


def close_distributed(d: Dist):
    """Leave the process group together: a rank that tears gloo down while another is still
    writing its summary can abort ("terminate called without an active exception")."""
    if d.world > 1:
        import torch.distributed as dist
        dist.barrier()
        dist.destroy_process_group()

# -----------------------------------------------------------------------------
# The run record


@dataclass(kw_only=True)
class Run:
    """What a stage's step and loop read; sft_comt.Run and ccrl.Run add their stage's own."""
    args: argparse.Namespace
    dist: Dist
    device: torch.device
    tok: object
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    autocast: object = contextlib.nullcontext()  # the autocast context of --dtype (off under --shard)
    sharded: bool = False  # the model is split over the ranks (FSDP2, --shard); else whole on every rank
    totals: dict = field(default_factory=dict)  # counts and seconds carried in the checkpoint
    log_path: object = None  # lifecycle.RunLog on the main rank, None elsewhere
    script: str = ""  # the script's file name, recorded in the run directory
    checks: dict = field(default_factory=dict)  # fingerprints of the inputs (lifecycle.CHECKS)


# -----------------------------------------------------------------------------
# Ranks: how a step's work is shared. Every rank takes every world-th row of the global batch and
# runs the same loss, a sum over the whole global batch with global weights; the gradients are then
# summed over the ranks. Whole model on every rank: each backward leaves this rank's part, and
# sum_grads adds the parts up. Sharded (FSDP2): each backward reduces over the ranks itself, as an
# average, so the loss is scaled by the world size first; and since every forward is a collective,
# every rank runs as many micro-batches as any other (even_out pads with batches that train nothing).
# One process is the world of one. The step functions call these and never ask which case they are in.


def my_share(rows: list, run: Run) -> list:
    """This rank's rows of a global batch: every world-th, from its rank."""
    return rows[run.dist.rank::run.dist.world]


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
        all_reduce_sum(p.grad, run.dist)


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


# -----------------------------------------------------------------------------
# Token rows: one padder and one masked log-prob for SFT and RL


def length_groups(lengths: list[int], max_rows: int) -> list[list[int]]:
    """Row indices split into micro-batches of at most max_rows rows of similar length, shortest
    first. The split minimises the padded cells (rows x longest row, summed) plus, for every
    micro-batch, one longest row of the whole batch: a micro-batch of its own only pays for rows
    that would otherwise pad a lot (a long replay document among short examples, say)."""
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
    tokens trained on (each predicted from the tokens before it), False on the padding."""
    T = max(map(len, rows))
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.bool)
    for r, (x, m) in enumerate(zip(rows, masks)):
        ids[r, :len(x)] = torch.tensor(x)
        mask[r, :len(m)] = torch.tensor(m)
    return ids, mask


def target_logprobs(model, ids: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(N,) log-probs of the masked tokens of ids (B,T), row-major, under softmax(logits / temperature),
    each from the tokens before it. Right padding needs no attention mask: real tokens never attend
    to the pads after them; logits are computed only where a target is."""
    target = mask[:, 1:]  # (B,T-1): position t predicts token t+1
    logits = model(ids[:, :-1], logits_mask=target)  # (N,V)
    return torch.log_softmax(logits / temperature, -1).gather(-1, ids[:, 1:][target][:, None])[:, 0]


# -----------------------------------------------------------------------------
# The optimiser: learning-rate schedule, gradient clipping, autocast


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 10% of `peak` at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def set_lr(opt, lr: float):
    for g in opt.param_groups:
        g["lr"] = lr


def clip_grads(model, max_norm: float) -> float:
    """Clip the gradient norm (over every rank's shards when sharded) to max_norm; returns the norm
    before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if hasattr(norm, "full_tensor"):  # a DTensor: the shards' partial norms, combined
        norm = norm.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm.item()


def autocast_for(args, device: torch.device):
    """Autocast to --dtype; off under --shard, where FSDP2 casts the gathered weights instead."""
    amp = pick_dtype(args.dtype, device)
    return torch.autocast(device.type, dtype=amp, enabled=amp != torch.float32 and not args.shard)


# -----------------------------------------------------------------------------
# Sharding and memory (--shard: FSDP2; --offload; --grad-checkpoint): each decoder block, then the
# root (embeddings, final norm, head), is split over a 1-D mesh of all ranks, so a rank keeps 1/N of
# the weights, their gradients and the AdamW state; a block's full weights are gathered for its
# forward and backward and freed after. How its gradient reduction and collective forwards are met:
# the Ranks banner. With a compute dtype below float32 the gathered weights are cast to it (bf16
# compute, fp32 master weights and gradient reductions) instead of autocast.


def shard_model(model, device: torch.device, compute_dtype: torch.dtype = torch.float32, offload: bool = False):
    """fully_shard every block, then the root, over all ranks (gloo on CPU, nccl on GPU); with
    offload the shards and the optimiser state live in CPU memory. Build the optimiser after this."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    kw = dict(mesh=mesh, mp_policy=MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32),
              offload_policy=CPUOffloadPolicy() if offload else OffloadPolicy())
    for block in model.model.layers:
        fully_shard(block, **kw)
    return fully_shard(model, **kw)


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule
    return isinstance(model, FSDPModule)


def full_params(model):
    """(name, full tensor) of each parameter, a sharded one gathered from every rank: a collective,
    so every rank iterates it to the end."""
    from torch.distributed.tensor import DTensor
    for name, p in model.named_parameters():
        if isinstance(p, DTensor):  # (an offloaded shard is gathered on the mesh's device)
            p = p.to(p.device_mesh.device_type).full_tensor()
        yield name, p.detach()


def gathered_copy(model, keep: bool, device="cpu", dtype=torch.float32):
    """A plain (unsharded) Transformer with the model's current weights on the ranks where keep is
    True (None elsewhere); every rank calls it."""
    from comt.model import Transformer
    state = {name: t.to(device=device, dtype=dtype) for name, t in full_params(model) if keep}
    return Transformer.from_state(model.config, state, device, dtype) if keep else None


@torch.no_grad()
def refresh_copy(copy, model) -> float:
    """Copy the sharded model's current weights into `copy` in place (the engine's CUDA graph reads
    weights where they are); returns the seconds spent gathering. Every rank calls it."""
    t0, dst = time.time(), dict(copy.named_parameters())
    for name, t in full_params(model):
        dst[name].copy_(t)
    return time.time() - t0


def peak_memory(device: torch.device) -> dict:
    """{peak_memory_gb: ...} on a GPU, for a summary line; nothing elsewhere."""
    return dict(peak_memory_gb=round(torch.cuda.max_memory_allocated(device) / 2**30, 2)) if device.type == "cuda" \
        else {}


def refuse_bad_memory_flags(args, device: torch.device, script: str):
    """One line for --shard outside torchrun and for --offload where it cannot apply."""
    if args.offload and not args.shard:
        raise SystemExit("--offload shards to CPU memory: it needs --shard")
    if args.offload and device.type != "cuda":
        raise SystemExit("--offload moves GPU memory to the CPU: on the CPU there is nothing to offload; drop it")
    if args.shard and "RANK" not in os.environ:
        raise SystemExit(f"--shard runs under torchrun, e.g. torchrun --nproc_per_node 2 {script} --shard ... "
                         f"(--nproc_per_node 1 with --offload for one GPU)")
