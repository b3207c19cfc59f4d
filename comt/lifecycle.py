"""
The life of a training run in its --out directory: claiming it (a lock, refusing what is not this
script's), resume with the checkpoint's arguments and logs cut back to it, the set-up both stages
share (one call: start), the loop's bookkeeping (steps, checkpoint_or_stop, end) and stop requests
(Ctrl-C, SIGTERM, --stop-at) that save before exiting. The checkpoint itself, written so that no
kill can break it, is comt/checkpoint.py's. base.py, sft_comt.py and ccrl.py all run this way.
"""
import argparse
import json
import os
import signal
import sys

import torch

from comt.checkpoint import (LOCK_FILE, LOG_FILE, LOG_FILES, PARTIAL, RUN_FILE, RunLog, finish_interrupted_save,
                             restore_train_state, save_run)
from comt.common import DTYPES, STATE_FILE, load_train_state, log_json, pick_dtype, why
from comt.flags import COUNT, from_flags
from comt.parallel import (Dist, autocast_for, close_distributed, init_distributed, main_decides,
                           refuse_bad_memory_flags, shard_model)
from comt.training import Schedule

# -----------------------------------------------------------------------------
# Claiming --out.
# A run claims OUT only when it is absent, empty, or a run of the same script (run.json), and never
# the model it starts from. Nothing is read with pickle's code execution (weights_only) and no symlink
# inside OUT is written through. A lock on OUT (held until the process ends, however it ends)
# refuses a second run on the same directory.

STOPPED = 3  # exit status of a run that saved and stopped before its last step (a signal, or --stop-at)
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


# -----------------------------------------------------------------------------
# A stage's run: the set-up both stages share, then the loop's bookkeeping around their steps


def start(run_type, args, script: str, dist: Dist, device, state: dict | None, *, model, tok, checks: dict,
          totals: dict, weight_decay: float = 0.0, **fields):
    """The half of set-up both stages share, in one call: the memory flags checked, gradient
    checkpointing, --shard (FSDP2), the optimiser (AdamW; restored with the run's totals on --resume),
    the run directory claimed and its log opened (new runs), autocast. Returns the stage's run record
    (`run_type`, a training.Run) with `fields`, the stage's own."""
    refuse_bad_memory_flags(args, device, script)
    model.grad_checkpoint = args.grad_checkpoint
    if args.shard:
        shard_model(model, device, pick_dtype(args.dtype, device), args.offload)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    if state:
        totals.update(restore_train_state(state, opt, model, args.out)[1])
    log = claim_and_log(args, script, state, dist, checks)
    return run_type(args=args, dist=dist, device=device, tok=tok, model=model, opt=opt,
                    schedule=from_flags(Schedule, args), seed=args.seed, autocast=autocast_for(args, device),
                    sharded=args.shard, totals=totals, log_path=log, script=script, checks=checks,
                    first=state["step"] if state else 0, **fields)


def steps(run, desc: str):
    """The steps the run still has to take (from its checkpoint's on --resume), under a progress bar
    on the main rank; from here on Ctrl-C and SIGTERM ask the run to stop (checkpoint_or_stop)."""
    from tqdm import tqdm
    run.stop = StopRequest()
    run.bar = tqdm(range(run.first, run.schedule.steps), initial=run.first, total=run.schedule.steps, desc=desc,
                   disable=not run.dist.main)
    return run.bar


def log_row(run, row: dict, **postfix):
    """A step's log line (the main rank writes it), and what the progress bar shows of it."""
    if run.dist.main:
        log_json(row, run.log_path)
    run.bar.set_postfix(**postfix)


def checkpoint_or_stop(run, done: int):
    """After step `done`: a checkpoint every --save-every steps and at the end; a stop request saves
    and exits (save_or_stop)."""
    save_or_stop(done, run.args, run.stop, run.dist, run.device, lambda step: save_run(run, step), run.script)


def end(run, summary: dict | None):
    """After the last step: the summary line (the main rank writes it), the ranks leave together."""
    run.bar.close()
    if run.dist.main and summary is not None:
        log_json(summary, run.log_path)
    close_distributed(run.dist)


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
        return bool(d.sum(torch.tensor([float(self.requested)], device=device)).item())
