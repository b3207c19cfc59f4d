"""
The life of a training run in its --out directory: claiming it (a lock, refusing what is not this
script's), kill-safe checkpoints with the training state (the optimiser sharded under --shard),
resume with the checkpoint's arguments and logs cut back to it, and stop requests (Ctrl-C,
SIGTERM, --stop-at) that save before exiting. base.py, sft_comt.py and ccrl.py all run this way.
"""
import argparse
import json
import os
import random
import shutil
import signal
import stat
import sys

import torch

from comt.common import COUNT, DTYPES, STATE_FILE, code_version, load_train_state, why
from comt.training import (Dist, all_reduce_sum, barrier, close_distributed, gathered_copy, init_distributed,
                           is_sharded, main_decides)

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
# A run claims OUT only when it is absent, empty, or a run of the same script (run.json), and never
# the model it starts from. Nothing is read with pickle's code execution (weights_only) and no symlink
# inside OUT is written through. A lock on OUT (held until the process ends, however it ends)
# refuses a second run on the same directory.

LOG_FILE = "log.jsonl"
LOG_FILES = (LOG_FILE, "examples.txt")  # what a run appends to as it goes (ccrl.py --log-examples writes the second)
RUN_FILE = "run.json"
PARTIAL = ".partial"  # where a save is staged before it commits
SHARDS = "optimizer_shards"  # a --shard run's optimiser state: one file per rank (torch.distributed.checkpoint)
STOPPED = 3  # exit status of a run that saved and stopped before its last step (a signal, or --stop-at)
LOCK_FILE = ".lock"  # held by the run using OUT (lock_out); never part of a checkpoint
_locks: dict = {}  # real path of a claimed --out -> its held FileLock


def lock_out(out: str):
    """Create `out` and take an exclusive lock on it (OUT/.lock, filelock: flock on Unix, msvcrt on
    Windows) for the life of this process; the operating system releases it however the process ends."""
    from filelock import FileLock, Timeout
    path = os.path.join(out, LOCK_FILE)
    try:
        os.makedirs(out, exist_ok=True)
        key = os.path.realpath(out)
        if key in _locks:
            return
        if os.path.islink(path) or (os.path.exists(path) and not os.path.isfile(path)):
            raise SystemExit(f"--out {out}: its {LOCK_FILE} is not a plain file (a link or a folder); a run locks "
                             f"only a file of its own, so choose another --out")
        lock = FileLock(path, timeout=0)
        lock.acquire()
    except Timeout:
        raise SystemExit(f"--out {out}: another run is using this directory; wait for it to end, stop it, or "
                         f"choose another --out") from None
    except OSError as e:
        raise SystemExit(f"--out {out}: cannot create or lock it ({why(e)}); choose a directory you can "
                         f"write") from None
    _locks[key] = lock


def lock_held(out: str) -> bool:
    """Whether a process (another, or this one) holds the lock on `out` now: a run is using it."""
    from filelock import FileLock, Timeout
    path = os.path.join(out, LOCK_FILE)
    if os.path.realpath(out) in _locks:
        return True
    if not os.path.isfile(path):
        return False
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False


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
            if name not in (RUN_FILE, PARTIAL, LOCK_FILE) and os.path.isfile(path) and not os.path.islink(path):
                os.remove(path)
    old_shards = os.path.join(out, SHARDS)
    if SHARDS in names and os.path.isdir(old_shards) and not os.path.islink(old_shards):
        shutil.rmtree(old_shards)  # the previous checkpoint's, replaced by the partial's (not yet moved in)
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
        make_readable(partial)
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


def make_readable(folder: str):
    """Give what a save wrote in `folder` the modes the user's umask allows (some writers create their
    files 0600): files rw-r--r--, folders (the optimiser shards) rwxr-xr-x, so the owner can enter,
    replace and remove them."""
    umask = current_umask()
    for root, dirs, files in os.walk(folder):
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def run_owner(out: str) -> str | None:
    """The script whose run `out` holds (see above); None when it holds none."""
    try:
        with open(os.path.join(out, RUN_FILE)) as f:
            return str(json.load(f)["script"])
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"--out {out}: its {RUN_FILE} cannot be read ({why(e)}), so whose run it holds is unknown; "
                         f"choose another --out") from None
    return None


def refuse_foreign_out(args, script: str):
    """Exit in one line, before anything is written, when --out is not this script's to use: it holds
    something else than a run of this script, a symlink, or is the model the run starts from."""
    out = args.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise SystemExit(f"--out {out}: is a file, not a directory")
    start = getattr(args, "init", None) or getattr(args, "model", None)
    if start and not args.resume and os.path.exists(out) and os.path.exists(start) and os.path.samefile(out, start):
        raise SystemExit(f"--out {out}: is the checkpoint this run starts from; choose another --out")
    entries = [n for n in os.listdir(out) if n != LOCK_FILE] if os.path.isdir(out) else []
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


def claim_out(args, d: Dist, script: str) -> dict | None:
    """Take --out for this run: refuse a directory that is not this script's, lock it, finish a save a
    kill cut short, and return the training state to resume (--resume). A new run is refused where it
    would overwrite an unfinished one."""
    missing = f"--resume: no checkpoint to resume in {args.out} (missing {STATE_FILE})"
    if args.resume and not os.path.isdir(args.out):
        raise SystemExit(missing)

    def claim():
        try:
            refuse_foreign_out(args, script)
            lock_out(args.out)
            finish_interrupted_save(args.out)
        except OSError as e:  # a directory that cannot be read or written
            raise SystemExit(f"--out {args.out}: cannot use it ({why(e)}); choose a directory you can write") from None
        state = load_train_state(args.out, mmap=True)
        if not args.resume and state and state["step"] < state["args"]["steps"]:
            raise SystemExit(f"--out {args.out} holds an unfinished run (step {state['step']} of "
                             f"{state['args']['steps']}): continue it with --resume, or choose another --out "
                             f"(or delete that one) to start over")
        if args.resume and state is None:
            raise SystemExit(missing)
    main_decides(d, claim)  # the other ranks wait here, and leave with rank 0 if it refuses
    return load_train_state(args.out) if args.resume else None


def trim_logs(out: str, state: dict):
    """Cut the logs back to their length at the checkpoint: the lines after it were written by steps
    the checkpoint does not hold, and the resumed run writes them again."""
    for name in LOG_FILES:
        path, size = os.path.join(out, name), state["log_bytes"].get(name, 0)
        if os.path.isfile(path) and os.path.getsize(path) > size:
            os.truncate(path, size)


CHECKS = {"data": "the training data (--data, --targets or the file they name)",
          "reference": "the KL reference model (the --init directory)"}  # (checks["init"]: what the run started
# from, checkpoint_id; recorded for whoever asks later whether a run is still the one of its inputs)


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


def claim_and_log(args, script: str, state: dict | None, d: Dist, checks: dict) -> RunLog | None:
    """Claim --out for a new run (a resumed run was claimed by begin_run) and return the log of this
    run on the main rank (None on the others), once every input has been checked. `checks`:
    fingerprints of what the run trains on (CHECKS), recorded in each checkpoint; a resumed run whose
    inputs changed is refused here, before a byte of its directory changes, and only then are its
    logs cut back to the checkpoint. Over a finished run of this script a new run logs into
    OUT/.partial (RunLog), so the old run stays whole until the first checkpoint."""
    if state is not None:
        changed = [what for key, what in CHECKS.items()
                   if key in checks and state.get("checks", {}).get(key, checks[key]) != checks[key]]
        if changed:
            raise SystemExit(f"--resume {args.out}: {' and '.join(changed)} changed since the checkpoint; restore "
                             f"them, or start a new run in another --out")
    else:
        claim_out(args, d, script)
    if not d.main:
        return None
    if state is not None:
        trim_logs(args.out, state)
    else:
        old = [n for n in os.listdir(args.out) if n not in (RUN_FILE, PARTIAL, LOCK_FILE)]
        folder = os.path.join(args.out, PARTIAL) if old else args.out
        os.makedirs(folder, exist_ok=True)
        open(os.path.join(folder, LOG_FILE), "w").close()
        with open(os.path.join(args.out, RUN_FILE), "w") as f:
            json.dump(dict(script=script), f)
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
                    "state over the ranks (for students one GPU cannot hold; otherwise each rank holds the whole model)")
    ap.add_argument("--grad-checkpoint", action="store_true", help="recompute each block's activations in the "
                    "backward pass instead of keeping them (less memory, ~1/3 more compute)")
    ap.add_argument("--offload", action="store_true", help="with --shard: keep the shards and the optimiser state "
                    "in CPU memory (a 7-8B student on one GPU; slow)")


# flags that may differ from the checkpoint's on --resume: where the run is and how it is run, and
# --steps to extend it (the learning-rate schedule then stretches from the resumed step on)
RESUMABLE = ("out", "resume", "stop_at", "device", "steps", "save_every", "log_every", "eval_every", "log_examples",
             "eval_max_new")
UNSET = object()


def given_flags(ap: argparse.ArgumentParser, argv) -> set:
    """The flags written on the command line (not left to their defaults): parsed again into a
    namespace that already holds every name, which argparse then gives no default."""
    names = vars(ap.parse_args(argv))
    probe = ap.parse_args(argv, argparse.Namespace(**{k: UNSET for k in names}))
    return {k for k, v in vars(probe).items() if v is not UNSET}


def resume_run(args, d: Dist, script: str, given: set) -> tuple:
    """(the arguments of the checkpoint in args.out, its training state). The run continues in the
    --out given, wherever the checkpoint was first written (a copy or a moved run resumes in place);
    a run of another script, and flags given that differ from the checkpoint's, are refused, except
    those in RESUMABLE. The logs are cut back to the checkpoint later, by claim_and_log."""
    state = claim_out(args, d, script)
    saved = state["args"]
    changed = sorted(k for k in given - set(RESUMABLE) if k in saved and saved[k] != getattr(args, k))
    if changed:
        flag = lambda k: "--" + k.replace("_", "-")
        raise SystemExit(f"--resume {args.out}: " + "; ".join(f"{flag(k)} {getattr(args, k)!r} differs from the "
                                                             f"checkpoint's {saved[k]!r}" for k in changed)
                         + ". Leave them out to continue the run as it was, or start a new run in another --out. "
                         "Flags that may change on resume: " + ", ".join(map(flag, RESUMABLE)))
    if "steps" in given and args.steps < state["step"]:
        raise SystemExit(f"--resume {args.out}: --steps {args.steps} is below the checkpoint's step {state['step']}; "
                         f"a run cannot be shortened (its checkpoint is past that step)")
    kept = {k: getattr(args, k) for k in given & set(RESUMABLE)}
    merged = {**vars(args), **saved, **kept,  # (flags newer than the checkpoint: their defaults)
              "out": args.out, "resume": True, "stop_at": args.stop_at, "device": args.device}
    return type(args)(**merged), state


def begin_run(args, script: str, given: set) -> tuple:
    """(args, dist, device, state) of a training script (`script`: its file name, which the run
    directory records; `given`: the flags on its command line, given_flags): join torchrun when
    launched by it; with --resume, the checkpoint's arguments and training state (None for a new run).
    Nothing in --out changes before claim_and_log."""
    dist, device = init_distributed(args.device)
    state = None
    if args.resume:
        args, state = resume_run(args, dist, script, given)
        if dist.main:
            print(f"resuming {args.out} at step {state['step']} (arguments from its checkpoint)", flush=True)
    return args, dist, device, state


def train_state(step: int, opt, totals: dict, args, script: str, checks: dict) -> dict:
    """What train_state.pt holds; opt None: the optimiser state is saved apart, sharded (save_run)."""
    return dict(step=step, optimizer=opt.state_dict() if opt is not None else None, totals=totals,
                args=dict(vars(args)), script=script, checks=checks, code=code_version(),
                rng=dict(torch=torch.get_rng_state(), python=random.getstate()))


def save_run(run, step: int):
    """Checkpoint a training stage's run (training.Run) after `step`; every rank calls it. Unsharded,
    rank 0 writes the model and the whole training state. Sharded, the full weights are gathered to
    rank 0 (float32, on the CPU) and written as the same Hugging Face directory, while each rank
    writes its shard of the optimiser state into the staged save (OUT/.partial/optimizer_shards);
    rank 0 then commits as always."""
    out, d = run.args.out, run.dist
    state = lambda opt: train_state(step, opt, run.totals, run.args, run.script, run.checks)
    if not is_sharded(run.model):  # (a refusal on rank 0, e.g. a full disk, ends every rank)
        main_decides(d, lambda: save_checkpoint(out, run.model, run.tok, state(run.opt)))
        return
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    full = gathered_copy(run.model, keep=d.main)
    if d.main:
        shutil.rmtree(os.path.join(out, PARTIAL, SHARDS), ignore_errors=True)  # a failed save's
    barrier(d)
    dcp.save(get_optimizer_state_dict(run.model, run.opt), checkpoint_id=os.path.join(out, PARTIAL, SHARDS))
    barrier(d)
    main_decides(d, lambda: save_checkpoint(out, full, run.tok, dict(state(None), shards=d.world)))


def restore_train_state(state: dict, opt, model=None, out: str | None = None) -> tuple[int, dict]:
    """Load optimiser and RNG state (a sharded run's optimiser state from OUT/optimizer_shards, on any
    number of ranks); returns (next step, totals)."""
    sharded = model is not None and is_sharded(model)  # --shard is taken from the checkpoint's arguments
    if sharded != bool(state.get("shards")) or (not sharded and not isinstance(state.get("optimizer"), dict)):
        raise SystemExit(f"--resume {out}: its training state does not match its arguments (a "
                         f"{'sharded' if sharded else 'one-process'} run without its optimiser state); start a new "
                         f"run in another --out")
    if sharded:
        load_optimizer_shards(model, opt, os.path.join(out, SHARDS))
    else:
        opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    return state["step"], state["totals"]


def load_optimizer_shards(model, opt, path: str):
    """Read a sharded optimiser state (torch.distributed.checkpoint files) into `opt`, resharded for
    this run's ranks, without running code: its metadata file is a pickle, read here by an unpickler
    that builds only the checkpoint's own record types, and its non-tensor items are read with
    weights_only. Missing or unreadable shards are one line."""
    import io
    import pickle

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import CheckpointException, DefaultLoadPlanner, FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta
    from torch.distributed.checkpoint.default_planner import set_element
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    class RecordsOnly(pickle.Unpickler):
        def find_class(self, module, name):
            value = getattr(sys.modules.get(module), name, None)
            records = module in ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem")
            if ((records and isinstance(value, type)) or (module, name) in SAFE_GLOBALS
                    or (module == "torch" and isinstance(value, (torch.dtype, torch.layout, torch.memory_format)))):
                return value
            raise pickle.UnpicklingError(f"{module}.{name} is not part of an optimiser checkpoint")

    class Reader(FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            with open(regular_file(path, ".metadata"), "rb") as f:
                metadata = RecordsOnly(f).load()
            check_storage(metadata, path)
            metadata.storage_meta = getattr(metadata, "storage_meta", None) or StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    class Planner(DefaultLoadPlanner):
        def load_bytes(self, read_item, value: io.BytesIO):  # DefaultLoadPlanner's, with weights_only
            item = torch.load(value, weights_only=True)
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], item)
            else:
                self.state_dict[read_item.dest_index.fqn] = item

    osd, reader = get_optimizer_state_dict(model, opt), Reader(path)
    try:
        reader.read_metadata()  # first here, where a refusal is one line (torch logs its own failures at length)
        dcp.load(osd, storage_reader=reader, planner=Planner())
    except (Exception, CheckpointException) as e:  # a missing, cut or crafted file: torch raises several kinds
        raise SystemExit(f"--resume: the optimiser shards in {path} are missing or unreadable ({why(e)}); start a "
                         f"new run in another --out") from None
    set_optimizer_state_dict(model, opt, osd)


def regular_file(folder: str, name) -> str:
    """folder/name, where name is a plain file name (no folder part, no way out of `folder`) of a
    regular file (not a link, a pipe or a device); anything else raises ValueError naming it."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"{name!r} is not a file name inside {folder}")
    full = os.path.join(folder, name)
    if os.path.islink(folder) or not stat.S_ISREG(os.lstat(full).st_mode):
        raise ValueError(f"{full} is not a regular file of the run's own")
    return full


def check_storage(metadata, folder: str):
    """Before anything is read: every item of a sharded optimiser checkpoint names a plain file of its
    own folder and a byte range inside that file (a crafted metadata file could name any file of the
    machine, a pipe that never ends, or a range of gigabytes)."""
    sizes = {}
    for item in getattr(metadata, "storage_data", {}).values():
        name, offset, length = getattr(item, "relative_path", None), getattr(item, "offset", None), \
            getattr(item, "length", None)
        if name not in sizes:
            sizes[name] = os.lstat(regular_file(folder, name)).st_size
        if not all(isinstance(x, int) and x >= 0 for x in (offset, length)) or offset + length > sizes[name]:
            raise ValueError(f"bytes {offset}+{length} are not inside {name} ({sizes[name]} bytes)")


SAFE_GLOBALS = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"),
                ("pathlib", "WindowsPath"), ("collections", "OrderedDict")}


def save_or_stop(done: int, args, stop: "StopRequest", d: Dist, device, save, script: str):
    """After step `done`: checkpoint every --save-every steps, at the end, and when stopping (a
    signal on any rank, or --stop-at before the last step); a stopped run then exits with STOPPED,
    so that `a && b` does not carry on from an unfinished model."""
    halt = stop.agreed(d, device) or (done == args.stop_at and done < args.steps)
    if done % args.save_every == 0 or done == args.steps or halt:
        save(done)
    if halt:
        if d.main:
            launcher = f"torchrun --nproc_per_node {d.world}" if d.world > 1 or args.shard else "python"
            print(f"stopped after step {done} of {args.steps} (exit status {STOPPED}); continue with: {launcher} "
                  f"{script} --out {args.out} --resume", flush=True)
        close_distributed(d)
        raise SystemExit(STOPPED)


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
