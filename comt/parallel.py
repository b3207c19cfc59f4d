"""
The processes of a run: torchrun set-up and the rank-0 decisions every rank follows (`Dist`: this
process's rank, its share of a batch, sums and gathers over the ranks), and what --shard and the
memory flags change (FSDP2 sharding, full copies gathered from the shards, autocast, peak memory).
The per-step math that the stages run on every rank is comt/training.py's.
"""
import os
from dataclasses import dataclass

import torch

from comt.common import pick_device, pick_dtype

# -----------------------------------------------------------------------------
# Distributed (torchrun)

@dataclass
class Dist:
    """This process's place among the torchrun ranks (one process: rank 0 of 1)."""
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, rows: list) -> list:
        """This rank's rows of a global batch: every world-th, from its rank."""
        return rows[self.rank::self.world]

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """x summed over the ranks, in place (x itself with one process)."""
        if self.world > 1:
            import torch.distributed as dist
            dist.all_reduce(x)
        return x

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order ([obj] with one process)."""
        if self.world == 1:
            return [obj]
        import torch.distributed
        parts = [None] * self.world
        torch.distributed.all_gather_object(parts, obj)
        return parts


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
# Sharding and memory (--shard: FSDP2; --offload; --grad-checkpoint): each decoder block, then the
# root (embeddings, final norm, head), is split over a 1-D mesh of all ranks, so a rank keeps 1/N of
# the weights, their gradients and the AdamW state; a block's full weights are gathered for its
# forward and backward and freed after. How its gradient reduction and collective forwards are met:
# comt/training.py's "Ranks" banner. With a compute dtype below float32 the gathered weights are cast
# to it (bf16 compute, fp32 master weights and gradient reductions) instead of autocast.


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
def refresh_copy(copy, model):
    """Copy the sharded model's current weights into `copy` in place (the engine's CUDA graph reads
    weights where they are). Every rank calls it."""
    dst = dict(copy.named_parameters())
    for name, t in full_params(model):
        dst[name].copy_(t)


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


def autocast_for(args, device: torch.device):
    """Autocast to --dtype; off under --shard, where FSDP2 casts the gathered weights instead."""
    amp = pick_dtype(args.dtype, device)
    return torch.autocast(device.type, dtype=amp, enabled=amp != torch.float32 and not args.shard)
