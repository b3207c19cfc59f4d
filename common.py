"""
Small helpers every script shares: device and dtype choice, seeding, torchrun (DDP) set-up,
atomic checkpoints with training state, JSONL logging.
"""
import argparse
import json
import math
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA GPU is visible to torch on this machine")
    return torch.device(name)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' -> bfloat16 on a GPU that supports it, float32 otherwise."""
    if name == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    if name not in DTYPES:
        raise SystemExit(f"unknown dtype {name!r}; choose from auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 10% of `peak` at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """with Timer(device) as t: ...  -> t.seconds (waits for the GPU before reading the clock)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        synchronize(self.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.t0


def log_json(row: dict, path: str | None = None, stream=None):
    """Print one JSON line to stream (default: the current sys.stdout) and append it to `path` when given."""
    line = json.dumps(row, default=float)
    print(line, file=stream or sys.stdout, flush=True)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


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


def close_distributed(d: Dist):
    """Leave the process group together: a rank that tears gloo down while another is still
    writing its summary can abort ("terminate called without an active exception")."""
    if d.world > 1:
        import torch.distributed as dist
        dist.barrier()
        dist.destroy_process_group()


# -----------------------------------------------------------------------------
# Checkpoints: a Hugging Face directory plus train_state.pt, replaced as a whole

STATE_FILE = "train_state.pt"


def save_checkpoint(out: str, model, tokenizer, state: dict):
    """Write model, tokenizer and training state into `out.partial`, then swap it in for `out`.
    `out` is always one complete checkpoint: a crash mid-write leaves the previous one. Files the
    checkpoint does not write (the log) are carried over. Non-finite weights are never saved."""
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise SystemExit(f"non-finite weights: not saving; the last checkpoint in {out} is untouched "
                         f"(try a lower --lr)")
    partial, old = out + ".partial", out + ".old"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    torch.save(state, os.path.join(partial, STATE_FILE))
    if os.path.isdir(out):
        for name in os.listdir(out):
            if not os.path.exists(os.path.join(partial, name)):
                os.replace(os.path.join(out, name), os.path.join(partial, name))
        os.replace(out, old)
    os.replace(partial, out)
    shutil.rmtree(old, ignore_errors=True)


def load_train_state(out: str) -> dict:
    """The training state of checkpoint `out` (recovering it if a swap was cut short)."""
    if not os.path.isdir(out) and os.path.isdir(out + ".old"):
        os.replace(out + ".old", out)
    path = os.path.join(out, STATE_FILE)
    if not os.path.isfile(path):
        raise SystemExit(f"--resume: no checkpoint to resume in {out} (missing {STATE_FILE})")
    return torch.load(path, weights_only=False)


def add_run_args(ap, save_every: int):
    """The runtime flags both training stages share."""
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    ap.add_argument("--dtype", default="auto", help="autocast dtype for training: auto (bfloat16 on GPU, float32 on "
                    "CPU), float32, bfloat16; weights stay float32")
    ap.add_argument("--save-every", type=int, default=save_every, help="steps between checkpoints")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint, with "
                    "the arguments saved there (other values are refused, except --steps to extend the run and "
                    "the runtime flags)")
    ap.add_argument("--stop-at", type=int, default=None, help="save and stop after this step, as if interrupted "
                    "(for time-boxed jobs; --resume continues)")


# flags that may differ from the checkpoint's on --resume: where the run is and how it is run, and
# --steps to extend it (the learning-rate schedule then stretches from the resumed step on)
RESUMABLE = ("out", "resume", "stop_at", "device", "steps", "save_every", "log_every", "eval_every")
UNSET = object()


def mark_given(ap, argv, args):
    """Record in args._given the flags written on the command line (not left to their defaults): an
    argparse namespace that already holds a name gets no default for it."""
    probe = ap.parse_args(argv, argparse.Namespace(**{k: UNSET for k in vars(args)}))
    args._given = {k for k, v in vars(probe).items() if v is not UNSET}
    return args


def saved_args(args) -> dict:
    return {k: v for k, v in vars(args).items() if not k.startswith("_")}


def resume_run(args) -> tuple:
    """(the arguments of the checkpoint in args.out, its training state). The run continues in the
    --out given, wherever the checkpoint was first written (a copy or a moved run resumes in place);
    flags given that differ from the checkpoint's are refused, except those in RESUMABLE."""
    state = load_train_state(args.out)
    saved, given = state["args"], getattr(args, "_given", set())
    changed = sorted(k for k in given - set(RESUMABLE) if k in saved and saved[k] != getattr(args, k))
    if changed:
        flag = lambda k: "--" + k.replace("_", "-")
        raise SystemExit(f"--resume {args.out}: " + "; ".join(f"{flag(k)} {getattr(args, k)!r} differs from the "
                                                             f"checkpoint's {saved[k]!r}" for k in changed)
                         + ". Leave them out to continue the run as it was, or start a new run in another --out. "
                         "Flags that may change on resume: " + ", ".join(map(flag, RESUMABLE)))
    kept = {k: getattr(args, k) for k in given & set(RESUMABLE)}
    merged = {**saved, **kept, "out": args.out, "resume": True, "stop_at": args.stop_at, "device": args.device}
    return type(args)(**merged), state


def train_state(step: int, opt, totals: dict, args) -> dict:
    return dict(step=step, optimizer=opt.state_dict(), totals=totals, args=saved_args(args),
                rng=dict(torch=torch.get_rng_state(), python=random.getstate()))


def restore_train_state(state: dict, opt) -> tuple[int, dict]:
    """Load optimiser and RNG state; returns (next step, totals)."""
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    return state["step"], state["totals"]


def save_or_stop(done: int, args, stop: "StopRequest", d: Dist, device, save, script: str) -> bool:
    """After step `done`: checkpoint every --save-every steps, at the end, and when stopping (a
    signal on any rank, or --stop-at). True when the run should exit now."""
    halt = stop.agreed(d, device) or done == args.stop_at
    if done % args.save_every == 0 or done == args.steps or halt:
        save(done)
    if halt and d.main:
        print(f"stopped after step {done}; continue with: python {script} --out {args.out} --resume")
    return halt


def autocast_for(args, device: torch.device):
    amp = pick_dtype(args.dtype, device)
    return torch.autocast(device.type, dtype=amp, enabled=amp != torch.float32)


class StopRequest:
    """Turns Ctrl-C and SIGTERM into a flag the training loop checks after each step, so the
    run saves a checkpoint and exits cleanly instead of dying mid-write."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step", file=sys.stderr, flush=True)

    def agreed(self, d: Dist, device: torch.device) -> bool:
        """True on every rank when any rank was asked to stop."""
        return bool(all_reduce_sum(torch.tensor([float(self.requested)], device=device), d).item())
