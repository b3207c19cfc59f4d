"""
A run's checkpoint on disk, written so that no kill can break it: a Hugging Face directory (the
run's --out) with the training state beside the weights (the optimiser sharded per rank under
--shard), staged and committed by renames; and the training state read back, without running code
and without reading outside the run's own files.
"""
import os
import random
import shutil
import stat
import sys

import torch

from comt.common import STATE_FILE, code_version, why
from comt.parallel import barrier, gathered_copy, is_sharded, main_decides

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

LOG_FILE = "log.jsonl"
LOG_FILES = (LOG_FILE, "examples.txt")  # what a run appends to as it goes (ccrl.py --log-examples writes the second)
RUN_FILE = "run.json"
PARTIAL = ".partial"  # where a save is staged before it commits
SHARDS = "optimizer_shards"  # a --shard run's optimiser state: one file per rank (torch.distributed.checkpoint)
LOCK_FILE = ".lock"  # held by the run using OUT (lock_out); never part of a checkpoint


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
    from torch.distributed.checkpoint.default_planner import set_element
    from torch.distributed.checkpoint.metadata import StorageMeta
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
