"""comt/lifecycle.py: a run's directory. Here: nothing outside a run's own folder is read when it
resumes (the sharded optimiser state names its files and byte ranges)."""
import os
import pickle
import signal

import pytest
import torch

from comt.lifecycle import load_optimizer_shards


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
