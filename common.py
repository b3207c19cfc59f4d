"""
Small helpers every script shares: device and dtype choice, seeding, torchrun set-up and FSDP2
sharding (--shard), kill-safe checkpoints with training state (sharded optimiser state under
--shard), which run directories a run may claim and a lock on them, strict-JSON logging.
"""
import argparse
import contextlib
import json
import math
import operator
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch


# -----------------------------------------------------------------------------
# Flag values, checked when the command line is parsed (argparse types: a bad value is one line)


BOUNDS = {"at least": operator.ge, "at most": operator.le, "above": operator.gt, "below": operator.lt}


def number(kind=float, lo=None, hi=None, above=None, below=None):
    """An argparse type: a finite `kind` (int or float) with lo <= x <= hi, x > above, x < below."""
    bounds = {words: b for words, b in zip(BOUNDS, (lo, hi, above, below)) if b is not None}

    def parse(text: str):
        try:
            x = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}")
        if not math.isfinite(x) or not all(BOUNDS[words](x, b) for words, b in bounds.items()):
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be " + " and ".join(
                ["finite"] * (kind is float) + [f"{words} {b}" for words, b in bounds.items()]))
        return x
    return parse


COUNT = number(int, lo=1)  # steps, batch sizes, lengths, intervals
NONNEG_INT = number(int, lo=0)  # sizes where 0 means "none"
POSITIVE = number(above=0)  # learning rates, temperatures, clip norms
NONNEG = number(lo=0)  # weights and coefficients where 0 means "off"
SHARE = number(lo=0, hi=1)  # probabilities and thresholds


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"--device {name}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA GPU is visible to torch on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise SystemExit(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device {name}: only cpu and cuda are supported")
    return device


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


def jsonable(x):
    """x as strict JSON values: NaN and infinities (a metric with nothing to measure) become None
    (null), NumPy and tensor scalars plain numbers. Strict JSON has no NaN, and parsers reject it.

    >>> jsonable({"acc": float("nan"), "n": [1, float("inf"), 0.5]})
    {'acc': None, 'n': [1, None, 0.5]}
    """
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.generic, torch.Tensor)):
        x = x.item()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x


def write_json(obj, path: str, indent: int | None = 1):
    """obj as strict JSON (jsonable) into the file `path`."""
    with open(path, "w") as f:
        json.dump(jsonable(obj), f, indent=indent, allow_nan=False, default=str)


def log_json(row: dict, path: str | None = None, stream=None):
    """Print one JSON line to stream (default: the current sys.stdout) and append it to `path` when
    given. Printed through tqdm, so a progress bar on the terminal is cleared first and redrawn
    below the line instead of being smeared through it."""
    from tqdm import tqdm
    line = json.dumps(jsonable(row), allow_nan=False)
    tqdm.write(line, file=stream or sys.stdout)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


# -----------------------------------------------------------------------------
# Token rows: one padder and one masked log-prob for SFT and RL


def pad_id(tok) -> int:
    """The id that fills batches and finished rows: the tokenizer's pad token, else its end of sequence."""
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


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
# Sharding (--shard, FSDP2): each decoder block, then the root (embeddings, final norm, head), is split
# over a 1-D mesh of all ranks, so a rank keeps 1/N of the weights, their gradients and the AdamW
# state; a block's full weights are gathered for its forward and backward and freed after. Its
# gradients are averaged over ranks, as under DDP, so the losses are scaled the same way. Every
# forward is a collective: each rank must run the same number of them (the stages pad with empty
# micro-batches). With a compute dtype below float32 the gathered weights are cast to it (bf16
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
    from model import Transformer
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


@contextlib.contextmanager
def no_grad_sync(model):
    """Backward passes inside only accumulate gradients; the next one outside reduces them over the
    ranks (DDP's no_sync, FSDP2's set_requires_gradient_sync)."""
    if not is_sharded(model):
        with model.no_sync():
            yield
        return
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def clip_grads(model, max_norm: float) -> float:
    """Clip the gradient norm (over every rank's shards when sharded) to max_norm; returns the norm
    before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if hasattr(norm, "full_tensor"):  # a DTensor: the shards' partial norms, combined
        norm = norm.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm.item()


def peak_memory(device: torch.device) -> dict:
    """{peak_memory_gb: ...} on a GPU, for a summary line; nothing elsewhere."""
    return dict(peak_memory_gb=round(torch.cuda.max_memory_allocated(device) / 2**30, 2)) if device.type == "cuda" \
        else {}


# -----------------------------------------------------------------------------
# Checkpoints: a Hugging Face directory (the run's --out) holding model, tokenizer, train_state.pt,
# the run's log.jsonl and run.json (which script's run it is).
#
# A save writes the new checkpoint into OUT/.partial and commits it by renaming its train_state.pt
# into place there (atomic); then it moves the files into OUT one by one, train_state.pt last, and
# removes the empty OUT/.partial. Whatever instant a kill lands on, the disk holds one of:
#   no OUT/.partial/train_state.pt  -> OUT is the previous complete checkpoint; the partial is dropped
#   OUT/.partial/train_state.pt     -> the save was committed; its remaining files are moved in
# finish_interrupted_save does exactly that, and every run does it before it reads or writes OUT.
# The logs are not moved: each checkpoint records their lengths, and --resume cuts them back to
# those (lines logged after the checkpoint are written again by the resumed steps). One exception:
# a new run over a finished one logs into OUT/.partial until its first checkpoint commits, and that
# commit replaces the old run whole (RunLog), so a new run stopped early leaves the old one intact.
#
# A run claims OUT only when it is absent, empty, or a run of the same script (run.json; for a run
# written before run.json existed, build.json or the flags in its training state), and never the
# model it starts from. Nothing is read with pickle's code execution (weights_only) and no symlink
# inside OUT is written through. A lock on OUT (held until the process ends, however it ends)
# refuses a second run on the same directory.

STATE_FILE = "train_state.pt"
LOG_FILE = "log.jsonl"
LOG_FILES = (LOG_FILE, "examples.txt")  # what a run appends to as it goes (ccrl.py --log-examples writes the second)
RUN_FILE = "run.json"
PARTIAL = ".partial"
SHARDS = "optimizer_shards"  # a --shard run's optimiser state: one file per rank (torch.distributed.checkpoint)
STOPPED = 3  # exit status of a run that saved and stopped before its last step (a signal, or --stop-at)
OWN_FLAG = {"worked": "base.py", "format": "sft_comt.py", "reward": "ccrl.py"}  # a flag only that script has
_locks: dict[str, int] = {}  # real path of a claimed --out -> its open descriptor (holds the lock)


def lock_out(out: str):
    """Create `out` and take an exclusive lock on it for the life of this process."""
    import fcntl
    os.makedirs(out, exist_ok=True)
    key = os.path.realpath(out)
    if key in _locks:
        return
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SystemExit(f"--out {out}: another run is using this directory; wait for it to end, stop it, or "
                         f"choose another --out") from None
    _locks[key] = fd


class RunLog(os.PathLike):
    """Where a log file of the run in `out` is appended: OUT/.partial/<name> while a new run that
    replaces a finished one has not committed its first checkpoint, else OUT/<name>."""

    def __init__(self, out: str, name: str = LOG_FILE):
        self.out, self.name = out, name

    def __fspath__(self) -> str:
        staged = os.path.isfile(os.path.join(self.out, PARTIAL, LOG_FILE))
        return os.path.join(self.out, PARTIAL, self.name) if staged else os.path.join(self.out, self.name)


def finish_interrupted_save(out: str):
    """Complete a committed save that was cut short, or drop one that never committed. A committed
    first checkpoint of a run that replaces another (its logs are in the partial) removes the old
    run's files first."""
    partial = os.path.join(out, PARTIAL)
    if not os.path.isdir(partial):
        return
    if not os.path.isfile(os.path.join(partial, STATE_FILE)):
        shutil.rmtree(partial)
        return
    names = os.listdir(partial)
    if LOG_FILE in names:
        for name in os.listdir(out):
            path = os.path.join(out, name)
            if name not in (RUN_FILE, PARTIAL) and os.path.isfile(path) and not os.path.islink(path):
                os.remove(path)
    if os.path.isdir(os.path.join(out, SHARDS)) and not os.path.islink(os.path.join(out, SHARDS)):
        shutil.rmtree(os.path.join(out, SHARDS))  # the previous checkpoint's (the partial may bring new ones)
    for name in sorted(names, key=lambda n: n == STATE_FILE):  # train_state.pt last
        os.replace(os.path.join(partial, name), os.path.join(out, name))
    os.rmdir(partial)


def save_checkpoint(out: str, model, tokenizer, state: dict):
    """Replace the checkpoint in `out` with model, tokenizer and training state (see above: a kill at
    any point leaves the old checkpoint or the new one). Non-finite weights are never saved; a failed
    write (a full disk) is one line and leaves the old checkpoint."""
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise SystemExit(f"non-finite weights: not saving; the last checkpoint in {out} is untouched "
                         f"(try a lower --lr)")
    partial = os.path.join(out, PARTIAL)
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        readable = 0o666 & ~current_umask()
        for name in os.listdir(partial):  # some writers create their file 0600
            os.chmod(os.path.join(partial, name), readable)
        logs = {name: os.fspath(RunLog(out, name)) for name in LOG_FILES}
        sizes = {name: os.path.getsize(path) for name, path in logs.items() if os.path.isfile(path)}
        torch.save(dict(state, log_bytes=sizes), os.path.join(partial, STATE_FILE + ".tmp"))
    except (OSError, RuntimeError) as e:
        for name in os.listdir(partial) if os.path.isdir(partial) else []:
            path = os.path.join(partial, name)
            if name not in LOG_FILES:
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        raise SystemExit(f"cannot write a checkpoint in {out} ({why(e)}); the last complete checkpoint there is "
                         f"untouched") from None
    os.replace(os.path.join(partial, STATE_FILE + ".tmp"), os.path.join(partial, STATE_FILE))  # the commit
    finish_interrupted_save(out)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def why(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def check_checkpoint(path: str, flag: str, hint: str = ""):
    """The tokenizer of checkpoint directory `path`, once its config, tokenizer and weight files are
    known to be readable (the weights' headers only: cheap). Anything wrong (no such directory, a
    corrupted config.json, truncated weights, an architecture model.py does not support) exits with
    one line naming the flag and the file. An unfinished run is used, with a warning first."""
    from safetensors import safe_open
    from transformers import AutoTokenizer

    from model import ModelConfig
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        raise SystemExit(f"{flag} {path}: not a checkpoint directory (expected config.json, *.safetensors and "
                         f"tokenizer files{hint})")
    try:
        with open(config) as f:
            ModelConfig.from_hf_dict(json.load(f))
    except Exception as e:  # json and our own UnsupportedModelError alike
        raise SystemExit(f"{flag} {path}: cannot read config.json ({why(e)})") from None
    state = load_train_state(path, mmap=True) if flag != "--out" else None  # (--out: the run resumes itself)
    if state and state.get("step", 0) < state.get("args", {}).get("steps", 0):
        print(f"{flag} {path}: an unfinished run (stopped after step {state['step']} of {state['args']['steps']}); "
              f"using it as it is (finish it first with --out {path} --resume)", file=sys.stderr, flush=True)
    weights = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not weights:
        raise SystemExit(f"{flag} {path}: no *.safetensors weights")
    for name in weights:
        try:
            with safe_open(os.path.join(path, name), "pt"):
                pass
        except Exception as e:  # a truncated file fails its header check
            raise SystemExit(f"{flag} {path}: cannot read {name} ({why(e)})") from None
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise SystemExit(f"{flag} {path}: cannot load the tokenizer ({why(e)})") from None


def load_model(path: str, device="cpu", dtype=torch.float32):
    """Transformer.from_pretrained of a directory check_checkpoint passed; what it still finds wrong
    (weights that do not match the config) is one line too."""
    from model import Transformer
    try:
        return Transformer.from_pretrained(path, device=device, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as e:
        raise SystemExit(f"{path}: cannot load the model ({why(e)})") from None


def fitting(items: list, lengths: list[int], limit: int, what: str) -> list:
    """The items whose token length is at most `limit` (the model's context); the others are skipped
    with a count on stderr. None left is an error."""
    keep = [x for x, n in zip(items, lengths) if n <= limit]
    if len(keep) < len(items):
        print(f"skipped {len(items) - len(keep)} of {len(items)} {what}: longer than the {limit} tokens the model "
              f"reads", file=sys.stderr, flush=True)
    if not keep:
        raise SystemExit(f"none of the {len(items)} {what} fits in the model's {limit} tokens")
    return keep


def load_train_state(out: str, mmap: bool = False, partial: bool = False) -> dict | None:
    """The training state of the checkpoint in `out` (or of the save committed in OUT/.partial);
    None when there is none. Read with weights_only: a crafted file cannot run code."""
    path = os.path.join(out, PARTIAL, STATE_FILE) if partial else os.path.join(out, STATE_FILE)
    if not os.path.isfile(path):
        return None
    try:
        return torch.load(path, weights_only=True, mmap=mmap)
    except Exception as e:  # a truncated or foreign file: torch raises several kinds
        raise SystemExit(f"{path}: not a readable training state ({why(e)}); start a new run in another --out") \
            from None


def run_owner(out: str) -> str | None:
    """The script whose run `out` holds (see above); None when it holds none."""
    try:
        with open(os.path.join(out, RUN_FILE)) as f:
            return str(json.load(f)["script"])
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if os.path.isfile(os.path.join(out, "build.json")):
        return "base.py"
    state = load_train_state(out, mmap=True) or load_train_state(out, mmap=True, partial=True)
    flags = state.get("args", {}) if isinstance(state, dict) else {}
    return next((script for flag, script in OWN_FLAG.items() if flag in flags), None)


def refuse_foreign_out(args):
    """Exit in one line, before anything is written, when --out is not this script's to use: it holds
    something else than a run of this script, a symlink, or is the model the run starts from."""
    out, script = args.out, args._script
    if os.path.exists(out) and not os.path.isdir(out):
        raise SystemExit(f"--out {out}: is a file, not a directory")
    start = getattr(args, "init", None) or getattr(args, "model", None)
    if start and not args.resume and os.path.exists(out) and os.path.exists(start) and os.path.samefile(out, start):
        raise SystemExit(f"--out {out}: is the checkpoint this run starts from; choose another --out")
    entries = os.listdir(out) if os.path.isdir(out) else []
    inside = [os.path.join(out, n) for n in entries]
    if os.path.isdir(os.path.join(out, PARTIAL)):
        inside += [os.path.join(out, PARTIAL, n) for n in os.listdir(os.path.join(out, PARTIAL))]
    links = [p for p in inside if os.path.islink(p)]
    if links:
        raise SystemExit(f"--out {out}: holds a symbolic link ({links[0]}); a run writes only regular files of its "
                         f"own, so choose another --out")
    owner = run_owner(out) if entries else script
    if owner != script:
        what = f"a run of {owner}" if owner else f"files that are not a run ({', '.join(sorted(entries)[:3])})"
        raise SystemExit(f"--out {out}: holds {what}; {script} writes only into a new or empty directory or one of "
                         f"its own runs, so choose another --out")


def claim_out(args, d: Dist) -> dict | None:
    """Take --out for this run: refuse a directory that is not this script's, lock it, finish a save a
    kill cut short, and return the training state to resume (--resume). A new run is refused where it
    would overwrite an unfinished one."""
    missing = f"--resume: no checkpoint to resume in {args.out} (missing {STATE_FILE})"
    if args.resume and not os.path.isdir(args.out):
        raise SystemExit(missing)
    if d.main:
        refuse_foreign_out(args)
        lock_out(args.out)
        finish_interrupted_save(args.out)
    barrier(d)
    if args.resume:
        state = load_train_state(args.out)
        if state is None:
            raise SystemExit(missing)
        return state
    state = load_train_state(args.out, mmap=True) if d.main else None
    if state and state["step"] < state["args"]["steps"]:
        raise SystemExit(f"--out {args.out} holds an unfinished run (step {state['step']} of "
                         f"{state['args']['steps']}): continue it with --resume, or choose another --out "
                         f"(or delete that one) to start over")
    return None


def trim_logs(out: str, state: dict):
    """Cut the logs back to their length at the checkpoint: the lines after it were written by steps
    the checkpoint does not hold, and the resumed run writes them again."""
    if "log_bytes" not in state:  # a checkpoint written before the lengths were recorded
        return
    for name in LOG_FILES:
        path, size = os.path.join(out, name), state["log_bytes"].get(name, 0)
        if os.path.isfile(path) and os.path.getsize(path) > size:
            os.truncate(path, size)


CHECKS = {"data": "the training data (--data, --targets or the file they name)",
          "reference": "the KL reference model (the --init directory)"}


def fingerprint(value) -> str:
    """A short hash of JSON-able data, or of a model's weights."""
    import hashlib
    h = hashlib.sha256()
    if isinstance(value, torch.nn.Module):
        for name, t in value.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    else:
        h.update(json.dumps(value, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def start_log(args, state: dict | None, d: Dist, checks: dict | None = None) -> RunLog | None:
    """The log of this run on the main rank (None on the others), once every input has been checked.
    `checks`: fingerprints of what the run trains on (CHECKS), recorded in each checkpoint; a resumed
    run whose inputs changed is refused here, before a byte of its directory changes, and only then
    are its logs cut back to the checkpoint. A new run claims --out here; over a finished run of this
    script it logs into OUT/.partial (RunLog), so the old run stays whole until the first checkpoint."""
    args._checks = dict(checks or {})
    if state is not None:
        changed = [what for key, what in CHECKS.items()
                   if key in args._checks and state.get("checks", {}).get(key, args._checks[key]) != args._checks[key]]
        if changed:
            raise SystemExit(f"--resume {args.out}: {' and '.join(changed)} changed since the checkpoint; restore "
                             f"them, or start a new run in another --out")
    else:
        claim_out(args, d)
    if not d.main:
        return None
    if state is not None:
        trim_logs(args.out, state)
    else:
        old = [n for n in os.listdir(args.out) if n not in (RUN_FILE, PARTIAL)]
        folder = os.path.join(args.out, PARTIAL) if old else args.out
        os.makedirs(folder, exist_ok=True)
        open(os.path.join(folder, LOG_FILE), "w").close()
        with open(os.path.join(args.out, RUN_FILE), "w") as f:
            json.dump(dict(script=args._script), f)
    return RunLog(args.out)


def add_run_args(ap, save_every: int):
    """The runtime flags both training stages share."""
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    ap.add_argument("--dtype", default="auto", choices=("auto", *DTYPES), help="autocast dtype for training: auto "
                    "(bfloat16 on GPU, float32 on CPU), float32, bfloat16; weights stay float32")
    ap.add_argument("--save-every", type=COUNT, default=save_every, help="steps between checkpoints")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint, with "
                    "the arguments saved there (other values are refused, except --steps to extend the run and "
                    "the runtime flags)")
    ap.add_argument("--stop-at", type=COUNT, default=None, help="save and stop after this step, as if interrupted "
                    f"(exit status {STOPPED}; for time-boxed jobs; --resume continues)")
    ap.add_argument("--shard", action="store_true", help="FSDP2 under torchrun: shard weights, gradients and optimiser "
                    "state over the ranks (for students one GPU cannot hold; DDP otherwise)")
    ap.add_argument("--grad-checkpoint", action="store_true", help="recompute each block's activations in the "
                    "backward pass instead of keeping them (less memory, ~1/3 more compute)")
    ap.add_argument("--offload", action="store_true", help="with --shard: keep the shards and the optimiser state "
                    "in CPU memory (a 7-8B student on one GPU; slow)")


def set_up_shard(args, model, device: torch.device):
    """Apply --grad-checkpoint and --shard to a freshly loaded model (before its optimiser is built);
    returns the compute dtype (autocast's without --shard)."""
    model.grad_checkpoint = args.grad_checkpoint
    compute = pick_dtype(args.dtype, device)
    if args.offload and not args.shard:
        raise SystemExit("--offload shards to CPU memory: it needs --shard")
    if args.shard:
        if "RANK" not in os.environ:
            raise SystemExit(f"--shard runs under torchrun, e.g. torchrun --nproc_per_node 2 {args._script} "
                             f"--shard ... (--nproc_per_node 1 with --offload for one GPU)")
        shard_model(model, device, compute, args.offload)
    return compute


# flags that may differ from the checkpoint's on --resume: where the run is and how it is run, and
# --steps to extend it (the learning-rate schedule then stretches from the resumed step on)
RESUMABLE = ("out", "resume", "stop_at", "device", "steps", "save_every", "log_every", "eval_every", "log_examples")
UNSET = object()


def mark_given(ap, argv, args):
    """Record in args._given the flags written on the command line (not left to their defaults): an
    argparse namespace that already holds a name gets no default for it."""
    probe = ap.parse_args(argv, argparse.Namespace(**{k: UNSET for k in vars(args)}))
    args._given = {k for k, v in vars(probe).items() if v is not UNSET}
    return args


def saved_args(args) -> dict:
    return {k: v for k, v in vars(args).items() if not k.startswith("_")}


def resume_run(args, d: Dist) -> tuple:
    """(the arguments of the checkpoint in args.out, its training state). The run continues in the
    --out given, wherever the checkpoint was first written (a copy or a moved run resumes in place);
    a run of another script, and flags given that differ from the checkpoint's, are refused, except
    those in RESUMABLE. The logs are cut back to the checkpoint later, by start_log."""
    state = claim_out(args, d)
    saved, given = state["args"], getattr(args, "_given", set())
    changed = sorted(k for k in given - set(RESUMABLE) if k in saved and saved[k] != getattr(args, k))
    if changed:
        flag = lambda k: "--" + k.replace("_", "-")
        raise SystemExit(f"--resume {args.out}: " + "; ".join(f"{flag(k)} {getattr(args, k)!r} differs from the "
                                                             f"checkpoint's {saved[k]!r}" for k in changed)
                         + ". Leave them out to continue the run as it was, or start a new run in another --out. "
                         "Flags that may change on resume: " + ", ".join(map(flag, RESUMABLE)))
    kept = {k: getattr(args, k) for k in given & set(RESUMABLE)}
    merged = {**saved_args(args), **saved, **kept,  # (flags newer than the checkpoint: their defaults)
              "out": args.out, "resume": True, "stop_at": args.stop_at, "device": args.device}
    resumed = type(args)(**merged)
    resumed._script = args._script
    return resumed, state


def begin_run(args, script: str) -> tuple:
    """(args, dist, device, state) of a training script (`script`: its file name, which the run
    directory records): join torchrun when launched by it; with --resume, the checkpoint's arguments
    and training state (None for a new run). Nothing in --out changes before start_log."""
    args._script = script
    dist, device = init_distributed(args.device)
    state = None
    if args.resume:
        args, state = resume_run(args, dist)
        if dist.main:
            print(f"resuming {args.out} at step {state['step']} (arguments from its checkpoint)", flush=True)
    return args, dist, device, state


def train_state(step: int, opt, totals: dict, args) -> dict:
    """What train_state.pt holds; opt None: the optimiser state is saved apart, sharded (save_run)."""
    return dict(step=step, optimizer=opt.state_dict() if opt is not None else None, totals=totals,
                args=saved_args(args), script=args._script, checks=getattr(args, "_checks", {}),
                rng=dict(torch=torch.get_rng_state(), python=random.getstate()))


def save_run(out: str, model, tok, opt, step: int, totals: dict, args, d: Dist):
    """Checkpoint a training stage; every rank calls it. Unsharded, rank 0 writes the model and the
    whole training state. Sharded, the full weights are gathered to rank 0 (float32, on the CPU) and
    written as the same Hugging Face directory, while each rank writes its shard of the optimiser
    state into the staged save (OUT/.partial/optimizer_shards); rank 0 then commits as always."""
    if not is_sharded(model):
        if d.main:
            save_checkpoint(out, model, tok, train_state(step, opt, totals, args))
        return
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    full = gathered_copy(model, keep=d.main)
    if d.main:
        shutil.rmtree(os.path.join(out, PARTIAL, SHARDS), ignore_errors=True)  # a failed save's
    barrier(d)
    dcp.save(get_optimizer_state_dict(model, opt), checkpoint_id=os.path.join(out, PARTIAL, SHARDS))
    barrier(d)
    if d.main:
        save_checkpoint(out, full, tok, dict(train_state(step, None, totals, args), shards=d.world))
    barrier(d)


def restore_train_state(state: dict, opt, model=None, out: str | None = None) -> tuple[int, dict]:
    """Load optimiser and RNG state (a sharded optimiser state from OUT/optimizer_shards, on any
    number of ranks); returns (next step, totals)."""
    sharded = state.get("optimizer") is None  # --shard is taken from the checkpoint: model is sharded too
    if sharded:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict
        osd = get_optimizer_state_dict(model, opt)
        dcp.load(osd, checkpoint_id=os.path.join(out, SHARDS))
        set_optimizer_state_dict(model, opt, osd)
    else:
        opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    return state["step"], state["totals"]


def save_or_stop(done: int, args, stop: "StopRequest", d: Dist, device, save):
    """After step `done`: checkpoint every --save-every steps, at the end, and when stopping (a
    signal on any rank, or --stop-at before the last step); a stopped run then exits with STOPPED,
    so that `a && b` does not carry on from an unfinished model."""
    halt = stop.agreed(d, device) or (done == args.stop_at and done < args.steps)
    if done % args.save_every == 0 or done == args.steps or halt:
        save(done)
    if halt:
        if d.main:
            print(f"stopped after step {done} of {args.steps} (exit status {STOPPED}); continue with: python "
                  f"{args._script} --out {args.out} --resume", flush=True)
        close_distributed(d)
        raise SystemExit(STOPPED)


def autocast_for(args, device: torch.device):
    """Autocast to --dtype; off under --shard, where FSDP2 casts the gathered weights instead."""
    amp = pick_dtype(args.dtype, device)
    return torch.autocast(device.type, dtype=amp, enabled=amp != torch.float32 and not args.shard)


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
