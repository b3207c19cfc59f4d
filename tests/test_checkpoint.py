"""The run directory survives anything: a kill at every point of a save, a second run on the same
--out, a new run over an unfinished one. Runs sft_comt.main in this process on the tiny model."""
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from transformers import PreTrainedTokenizerBase

import sft_comt
from comt import checkpoint, lifecycle
from comt.checkpoint import load_optimizer_shards
from comt.model import Transformer
from conftest import (COMMON, ROOT, SFT, free_port, locked_by_another_process, log_rows, one_line, run_sft, stopped,
                      torchrun, tree_digest, without_file_mode_override)

RUN = ["--n-train", "48", "--batch", "8", "--micro-batch", "4", "--steps", "6", "--warmup", "2", "--log-every", "1",
       "--eval-n", "0", "--lr", "3e-3", "--save-every", "2"]


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the code under test catches it or cleans up after it."""


def step_rows(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [(r["step"], r["loss"], r["grad_norm"]) for r in map(json.loads, f) if "step" in r]


def weights(out):
    return list(Transformer.from_pretrained(out).state_dict().values())


def arm_kill(monkeypatch, at_step: int, op: int | None) -> list:
    """Count the file operations of the save at `at_step`; with op = k, die before the k-th of them
    (a torch.save dies halfway through its file). Returns the list of operations seen."""
    seen, armed = [], []
    real_save = checkpoint.save_checkpoint

    def save(out, model, tok, state):
        armed.append(state["step"] == at_step)
        try:
            real_save(out, model, tok, state)
        finally:
            armed.append(False)

    def wrap(name, fn, torn=False):
        def op_(*a, **k):
            if armed and armed[-1]:
                seen.append(name)
                if len(seen) - 1 == op:
                    if torn:
                        with open(a[1], "wb") as f:
                            f.write(b"PK\x03\x04 half a file")
                    raise Killed(name)
            return fn(*a, **k)
        return op_

    monkeypatch.setattr(checkpoint, "save_checkpoint", save)  # what the stages' save_run calls
    for mod, name in ((os, "replace"), (os, "rmdir"), (shutil, "rmtree")):
        monkeypatch.setattr(mod, name, wrap(f"{mod.__name__}.{name}", getattr(mod, name)))
    monkeypatch.setattr(torch, "save", wrap("torch.save", torch.save, torn=True))
    monkeypatch.setattr(Transformer, "save_pretrained", wrap("model.save_pretrained", Transformer.save_pretrained))
    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained",
                        wrap("tokenizer.save_pretrained", PreTrainedTokenizerBase.save_pretrained))
    return seen


@pytest.mark.cli
def test_a_kill_at_any_point_of_a_save_resumes_to_the_uninterrupted_run(model_dir, tmp_path, monkeypatch):
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    sft_comt.main(["--model", model_dir, "--out", full, *RUN])
    stopped(sft_comt.main, ["--model", model_dir, "--out", cut, *RUN, "--stop-at", "2"])  # a checkpoint at step 2
    with monkeypatch.context() as m:  # count the operations of a save with nothing killed
        ops = arm_kill(m, 4, None)
        case = str(tmp_path / "count")
        shutil.copytree(cut, case)
        stopped(sft_comt.main, ["--out", case, "--resume", "--stop-at", "4"])
    assert len(ops) >= 8 and ops.count("os.replace") >= 5, ops  # the test sees the save's steps
    for k in range(len(ops)):
        case = str(tmp_path / f"kill{k}")
        shutil.copytree(cut, case)
        with monkeypatch.context() as m:
            arm_kill(m, 4, k)
            with pytest.raises(Killed):
                sft_comt.main(["--out", case, "--resume", "--stop-at", "4"])
        state = torch.load(os.path.join(case, checkpoint.STATE_FILE), weights_only=True) \
            if os.path.isfile(os.path.join(case, checkpoint.STATE_FILE)) else None
        sft_comt.main(["--out", case, "--resume"])
        on_disk = state and state["step"]
        assert step_rows(case) == step_rows(full), f"killed before {ops[k]} (#{k}); checkpoint on disk: {on_disk}"
        assert all(torch.equal(a, b) for a, b in zip(weights(case), weights(full))), f"killed before {ops[k]} (#{k})"
        assert not os.path.exists(os.path.join(case, checkpoint.PARTIAL))


@pytest.mark.cli
def test_resume_drops_log_lines_past_the_checkpoint(model_dir, tmp_path):
    full, out = str(tmp_path / "full"), str(tmp_path / "o")
    sft_comt.main(["--model", model_dir, "--out", full, *RUN])
    stopped(sft_comt.main, ["--model", model_dir, "--out", out, *RUN, "--stop-at", "4"])
    with open(os.path.join(out, "log.jsonl"), "a") as f:  # a step logged, then killed before its save
        f.write(json.dumps(dict(step=4, loss=9.0, grad_norm=1.0)) + "\n")
    sft_comt.main(["--out", out, "--resume"])
    assert step_rows(out) == step_rows(full)


@pytest.mark.cli
def test_a_second_run_on_the_same_out_is_refused(model_dir, tmp_path):
    out = str(tmp_path / "o")
    os.makedirs(out)
    with locked_by_another_process(out):
        with pytest.raises(SystemExit, match="another run is using this directory"):
            sft_comt.main(["--model", model_dir, "--out", out, *RUN])
        assert os.listdir(out) == [checkpoint.LOCK_FILE]  # nothing written beside the running run's lock
    sft_comt.main(["--model", model_dir, "--out", out, *RUN, "--steps", "2"])  # the lock ends with its process


@pytest.mark.cli
def test_a_new_run_does_not_overwrite_an_unfinished_one(model_dir, tmp_path):
    out = str(tmp_path / "o")
    stopped(sft_comt.main, ["--model", model_dir, "--out", out, *RUN, "--stop-at", "2"])
    before = {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)}
    with pytest.raises(SystemExit, match=r"unfinished run \(step 2 of 6\): continue it with --resume"):
        sft_comt.main(["--model", model_dir, "--out", out, *RUN])
    assert {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)} == before
    sft_comt.main(["--out", out, "--resume"])
    sft_comt.main(["--model", model_dir, "--out", out, *RUN, "--steps", "2"])  # a finished run may be replaced
    assert [r[0] for r in step_rows(out)] == [0, 1]  # with a log of its own


class RunsCode:
    """A pickle that creates `path` when it is unpickled with code execution."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


SHARDS_SCRIPT = """
import os, sys, torch, torch.distributed as dist
sys.path.insert(0, {root!r})
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT={port!r}, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
dist.init_process_group("gloo")
from torch.distributed.fsdp import fully_shard
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
from comt.checkpoint import load_optimizer_shards
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
for block in m:
    fully_shard(block)
fully_shard(m)
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
if sys.argv[1] == "save":
    m(torch.randn(3, 4)).sum().backward()
    opt.step()
    osd = get_optimizer_state_dict(m, opt)
    if len(sys.argv) > 3:  # a non-tensor item that runs code when unpickled
        import pickle
        exec(sys.argv[3])
        osd["param_groups"][0]["lr"] = payload
    dcp.save(osd, checkpoint_id=sys.argv[2])
else:
    load_optimizer_shards(m, opt, sys.argv[2])
    print("loaded", get_optimizer_state_dict(m, opt)["state"]["0.weight"]["step"].item())
dist.destroy_process_group()
"""


def shards(*argv):
    script = SHARDS_SCRIPT.format(root=ROOT, port=str(free_port()))
    return subprocess.run([sys.executable, "-c", script, *map(str, argv)], capture_output=True, text=True, cwd=ROOT)


def committed_sharded_save(root: str) -> str:
    """A run directory holding an old checkpoint (step 1, shards "old") and a committed save of a
    newer one (step 2, shards "new") still in OUT/.partial: the state a kill leaves during a commit."""
    out = os.path.join(root, "o")
    for folder, step in ((out, 1), (os.path.join(out, checkpoint.PARTIAL), 2)):
        os.makedirs(os.path.join(folder, checkpoint.SHARDS))
        with open(os.path.join(folder, checkpoint.SHARDS, "__0_0.distcp"), "w") as f:
            f.write("old" if step == 1 else "new")
        with open(os.path.join(folder, "model.safetensors"), "w") as f:
            f.write(f"weights {step}")
        torch.save(dict(step=step), os.path.join(folder, checkpoint.STATE_FILE))
    return out


def test_crafted_optimizer_shards_run_no_code(tmp_path):
    good, meta, item = tmp_path / "good", tmp_path / "meta", tmp_path / "item"
    assert shards("save", good).returncode == 0
    assert shards("load", good).stdout.strip() == "loaded 1.0"  # the safe reader reads a real checkpoint
    marker = tmp_path / "ran"
    shutil.copytree(good, meta)
    with open(meta / ".metadata", "wb") as f:  # crafted metadata
        pickle.dump(RunsCode(marker), f)
    assert "missing or unreadable" in one_line(shards("load", meta)) and not marker.exists()
    payload = f"class P:\n    def __reduce__(self): return (os.system, ('touch {marker}',))\npayload = P()"
    assert shards("save", item, payload).returncode == 0 and not marker.exists()
    assert "missing or unreadable" in one_line(shards("load", item)) and not marker.exists()


@pytest.mark.cli
def test_a_plain_run_never_takes_the_sharded_path(model_dir, tmp_path):
    """A one-process checkpoint whose optimiser entry is empty, beside crafted shards, is refused on
    --resume: the sharded reader is for sharded runs only, and nothing runs."""
    out, marker = str(tmp_path / "o"), tmp_path / "ran"
    run_sft(["--model", model_dir, "--out", out, *COMMON, "--stop-at", "2"], expect=lifecycle.STOPPED)
    state = torch.load(os.path.join(out, checkpoint.STATE_FILE), weights_only=True)
    torch.save(dict(state, optimizer=None), os.path.join(out, checkpoint.STATE_FILE))
    os.makedirs(os.path.join(out, checkpoint.SHARDS))
    with open(os.path.join(out, checkpoint.SHARDS, ".metadata"), "wb") as f:
        pickle.dump(RunsCode(marker), f)
    res = run_sft(["--out", out, "--resume"], check=False)
    assert "does not match its arguments" in one_line(res) and not marker.exists()


@pytest.mark.cli
def test_a_sharded_run_of_a_non_root_owner_saves_twice_and_resumes(model_dir, tmp_path):
    out = str(tmp_path / "o")
    as_user = without_file_mode_override()
    run_sft(["--model", model_dir, "--out", out, *COMMON, "--shard", "--save-every", "2", "--stop-at", "4"],
            launcher=(*as_user, *torchrun()), expect=1)  # checkpoints at 2 and 4, then stopped
    assert oct(os.stat(os.path.join(out, checkpoint.SHARDS)).st_mode & 0o777) == oct(0o777 & ~checkpoint.current_umask())
    run_sft(["--out", out, "--resume"], launcher=(*as_user, *torchrun()))
    assert [r["step"] for r in log_rows(out) if "step" in r and "loss" in r] == list(range(6))


def test_a_kill_at_any_operation_of_a_sharded_commit_keeps_the_new_shards(tmp_path, monkeypatch):
    class Killed(BaseException):
        pass

    ops = []
    for mod, name in ((os, "replace"), (os, "rmdir"), (shutil, "rmtree"), (os, "remove")):
        real = getattr(mod, name)

        def op(*a, _real=real, _name=f"{mod.__name__}.{name}", **k):
            ops.append(_name)
            if len(ops) - 1 == kill_at:
                raise Killed(_name)
            return _real(*a, **k)
        monkeypatch.setattr(mod, name, op)
    kill_at = None
    checkpoint.finish_interrupted_save(committed_sharded_save(str(tmp_path / "count")))
    counted = list(ops)
    assert counted.count("os.replace") == 3 and "shutil.rmtree" in counted
    for kill_at in range(len(counted)):
        ops.clear()
        out = committed_sharded_save(str(tmp_path / f"k{kill_at}"))
        with pytest.raises(Killed):
            checkpoint.finish_interrupted_save(out)
        ops.clear()
        kill_at_now, kill_at = kill_at, None
        checkpoint.finish_interrupted_save(out)  # the next start finishes the commit
        kill_at = kill_at_now
        with open(os.path.join(out, checkpoint.SHARDS, "__0_0.distcp")) as f:
            assert f.read() == "new", f"killed before {counted[kill_at]} (#{kill_at})"
        assert torch.load(os.path.join(out, checkpoint.STATE_FILE), weights_only=True)["step"] == 2
        assert not os.path.exists(os.path.join(out, checkpoint.PARTIAL))


def test_a_new_run_keeps_the_finished_one_whole_until_its_first_checkpoint(model_dir, tmp_path, monkeypatch):
    out = str(tmp_path / "o")
    sft_comt.main(["--model", model_dir, "--out", out, *SFT])
    before = tree_digest(out)

    class Killed(BaseException):
        pass

    def die(*a, **k):
        raise Killed
    with monkeypatch.context() as m:  # killed after two logged steps, before its first checkpoint
        m.setattr(checkpoint, "save_checkpoint", die)
        with pytest.raises(Killed):
            sft_comt.main(["--model", model_dir, "--out", out, *SFT, "--seed", "1"])
    assert {k: v for k, v in tree_digest(out).items() if not k.startswith(checkpoint.PARTIAL)} == before
    sft_comt.main(["--model", model_dir, "--out", out, *SFT, "--seed", "1", "--steps", "2"])
    rows = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    assert [r["step"] for r in rows if "loss" in r] == [0, 1] and rows[-1]["steps"] == 2  # the new run only
    assert not os.path.exists(os.path.join(out, checkpoint.PARTIAL))


def test_weights_are_written_readable_like_the_other_files(model_dir, tmp_path):
    out = tmp_path / "o"
    old = os.umask(0o022)
    try:
        sft_comt.main(["--model", model_dir, "--out", str(out), *SFT, "--steps", "1"])
    finally:
        os.umask(old)
    assert oct(os.stat(out / "model.safetensors").st_mode & 0o777) == oct(0o644)


def test_a_failed_write_is_one_line_and_keeps_the_checkpoint(model_dir, tmp_path, monkeypatch):
    out = str(tmp_path / "o")
    stopped(sft_comt.main, ["--model", model_dir, "--out", out, *SFT, "--stop-at", "2"])
    before = tree_digest(out)

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4224 vs 4118")
    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(SystemExit, match=r"cannot write a checkpoint in .* the last complete checkpoint there is "
                                         r"untouched"):
        sft_comt.main(["--out", out, "--resume"])
    monkeypatch.undo()
    assert {k: v for k, v in tree_digest(out).items() if k != "log.jsonl"} == \
        {k: v for k, v in before.items() if k != "log.jsonl"}
    sft_comt.main(["--out", out, "--resume"])  # and it resumes from there


def sharded_state(folder):
    """A real optimiser checkpoint in torch.distributed.checkpoint's format (one process), with a model
    and optimiser to load it into."""
    import warnings

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(get_optimizer_state_dict(model, opt), checkpoint_id=str(folder))
    return model, opt


def point_items_at(folder, name=None, length=None):
    """Rewrite the checkpoint's metadata so that its first item names another file or byte range."""
    path = os.path.join(folder, ".metadata")
    with open(path, "rb") as f:
        metadata = pickle.load(f)
    key = next(iter(metadata.storage_data))
    info = metadata.storage_data[key]
    metadata.storage_data[key] = type(info)(name if name is not None else info.relative_path, info.offset,
                                            length if length is not None else info.length)
    with open(path, "wb") as f:
        pickle.dump(metadata, f)


@pytest.mark.hostile
@pytest.mark.parametrize("target", ["absolute", "climbing", "pipe", "too long"])
def test_resume_reads_no_file_outside_its_shards_and_no_byte_outside_them(tmp_path, target, monkeypatch):
    from torch.distributed.checkpoint import FileSystemReader
    read = []
    monkeypatch.setattr(FileSystemReader, "read_data", lambda self, *a, **k: read.append(1))
    shards = tmp_path / "run" / "optimizer_shards"
    model, opt = sharded_state(shards)
    os.mkfifo(tmp_path / "fifo")  # opened, it would block forever (the alarm below fails the test instead)
    (tmp_path / "other.distcp").write_bytes(open(shards / "__0_0.distcp", "rb").read())
    name, length = dict(absolute=(str(tmp_path / "other.distcp"), None), climbing=("../../other.distcp", None),
                        pipe=("../../fifo", None), **{"too long": (None, 10**10)})[target]
    point_items_at(shards, name, length)
    signal.signal(signal.SIGALRM, lambda *a: pytest.fail("it opened the pipe"))
    signal.alarm(20)
    try:
        with pytest.raises(SystemExit, match="optimiser shards in .* are missing or unreadable"):
            load_optimizer_shards(model, opt, str(shards))
    finally:
        signal.alarm(0)
    assert not read  # refused before any item was read


def test_a_checkpoint_of_its_own_shards_still_loads(tmp_path):
    model, opt = sharded_state(tmp_path / "shards")
    before = {k: v.clone() for k, v in opt.state[next(iter(opt.state))].items()}
    for v in opt.state[next(iter(opt.state))].values():
        v.zero_()
    load_optimizer_shards(model, opt, str(tmp_path / "shards"))
    after = opt.state[next(iter(opt.state))]
    assert all(torch.equal(before[k], after[k]) for k in before)
