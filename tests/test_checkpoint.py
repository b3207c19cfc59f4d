"""The run directory survives anything: a kill at every point of a save, a second run on the same
--out, a new run over an unfinished one. Runs sft_comt.main in this process on the tiny model."""
import json
import os
import shutil

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from conftest import locked_by_another_process, stopped
from comt import lifecycle
from comt.model import Transformer
import sft_comt

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
    real_save = lifecycle.save_checkpoint

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

    monkeypatch.setattr(lifecycle, "save_checkpoint", save)  # what the stages' save_run calls
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
        state = torch.load(os.path.join(case, lifecycle.STATE_FILE), weights_only=True) \
            if os.path.isfile(os.path.join(case, lifecycle.STATE_FILE)) else None
        sft_comt.main(["--out", case, "--resume"])
        on_disk = state and state["step"]
        assert step_rows(case) == step_rows(full), f"killed before {ops[k]} (#{k}); checkpoint on disk: {on_disk}"
        assert all(torch.equal(a, b) for a, b in zip(weights(case), weights(full))), f"killed before {ops[k]} (#{k})"
        assert not os.path.exists(os.path.join(case, lifecycle.PARTIAL))


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
        assert os.listdir(out) == [lifecycle.LOCK_FILE]  # nothing written beside the running run's lock
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
