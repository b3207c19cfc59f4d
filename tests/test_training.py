"""comt/training.py: the per-step math both stages share, against hand computations (padding, masked
log-probs, the schedule, the optimiser step and the update), and the contention flag, from the
kernel's run-queue delay of the run's own threads."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from comt.training import contention, cpu_wait_seconds

needs_schedstat = pytest.mark.skipif(cpu_wait_seconds() is None, reason="the kernel does not report run-queue delay")


def slowed_by_other_jobs(step_fn, slow_step: int):
    """step_fn, with step `slow_step` run while as many busy processes as there are cores compete for
    them, and kept busy computing for a second meanwhile (a step made slow by another job)."""
    import time

    import torch

    def step(run, i, *rest):
        if i != slow_step:
            return step_fn(run, i, *rest)
        burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
        try:
            out, t0, x = step_fn(run, i, *rest), time.time(), torch.randn(256, 256)
            while time.time() - t0 < 1.0:
                x = torch.tanh(x @ x)
            return out
        finally:
            for b in burners:
                b.kill()
                b.wait()
    return step


@needs_schedstat
@pytest.mark.cli
def test_a_run_that_shared_the_cores_is_flagged(model_dir, tmp_path, monkeypatch):
    """Two tiny SFT runs: alone, its summary says it did not share the machine; with one step slowed by
    busy processes on every core, its threads waited for a core and the summary flags it."""
    import sft_comt
    summaries = {}
    for name, slow in (("alone", None), ("shared", 1)):
        if slow is not None:
            monkeypatch.setattr(sft_comt, "sft_step", slowed_by_other_jobs(sft_comt.sft_step, slow))
        out = str(tmp_path / name)
        sft_comt.main(["--model", model_dir, "--out", out, "--n-train", "32", "--batch", "4", "--steps", "3",
                       "--eval-n", "0"])
        summaries[name] = json.loads(open(os.path.join(out, "log.jsonl")).read().splitlines()[-1])
    assert summaries["alone"]["shared_machine"] is False
    assert summaries["shared"]["shared_machine"] is True
    assert summaries["shared"]["cpu_wait_share"] > 3 * summaries["alone"]["cpu_wait_share"]


def test_contention_is_the_wait_share_of_the_compute_threads():
    assert contention(0.3, 10.0, threads=2) == dict(cpu_wait_share=0.015, shared_machine=False)
    assert contention(3.0, 10.0, threads=2) == dict(cpu_wait_share=0.15, shared_machine=True)
    assert contention(None, 10.0) == dict(cpu_wait_share=None, shared_machine=None)


def test_pad_rows_and_masked_logprobs_by_hand():
    """pad_rows right-pads; target_logprobs gives, row-major, the log-prob of each masked token from the
    tokens before it, under softmax(logits / T): computed here one position at a time."""
    from comt.training import pad_rows, target_logprobs
    from conftest import tiny_model
    model = tiny_model(30)
    rows, masks = [[3, 4, 5, 6], [7, 8]], [[False, False, True, True], [False, True]]
    ids, mask = pad_rows(rows, masks, pad=0)
    assert ids.tolist() == [[3, 4, 5, 6], [7, 8, 0, 0]] and mask.tolist() == [[False, False, True, True],
                                                                             [False, True, False, False]]
    want = []
    for r, m in zip(rows, masks):
        logits = model(torch.tensor([r]))[0] / 0.5
        want += [torch.log_softmax(logits[t - 1], -1)[r[t]].item() for t in range(1, len(r)) if m[t]]
    got = target_logprobs(model, ids, mask, temperature=0.5)
    assert got.tolist() == pytest.approx(want, abs=1e-5)


def test_the_schedule_warms_up_then_decays_to_a_tenth():
    from comt.training import cosine_lr
    assert [cosine_lr(s, total=10, peak=2.0, warmup=4) for s in (0, 3)] == [0.5, 2.0]
    assert cosine_lr(10, total=10, peak=2.0, warmup=4) == pytest.approx(0.2)
    assert cosine_lr(7, total=10, peak=2.0, warmup=4) == pytest.approx(2.0 * (0.1 + 0.45))


def update_run(model, **schedule):
    import argparse

    from comt.parallel import Dist
    from comt.training import Run, Schedule
    return Run(args=argparse.Namespace(out="-"), dist=Dist(), device=torch.device("cpu"), tok=None, model=model,
               opt=torch.optim.SGD(model.parameters(), lr=0.0), schedule=Schedule(**schedule))


def batches(n: int, seed: int = 0):
    from types import SimpleNamespace
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 30, (n, 6), generator=g)
    return [SimpleNamespace(ids=ids[i:i + 1], mask=torch.tensor([[False, False, True, True, True, True]]))
            for i in range(n)]


def test_optimizer_step_clips_sets_the_step_lr_and_stops_before_a_non_finite_update():
    """One optimiser step: SGD at the schedule's lr for the step, the norm clipped to grad_clip (the
    norm before clipping returned), and a non-finite gradient stops the run with the weights as they were."""
    from comt.training import optimizer_step
    from conftest import tiny_model
    model = tiny_model(30)
    run = update_run(model, lr=0.5, warmup=0, steps=1, grad_clip=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    n = sum(p.numel() for p in model.parameters())
    assert optimizer_step(run, step=0) == pytest.approx(n ** 0.5, rel=1e-5)
    moved = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())])
    assert moved.norm().item() == pytest.approx(0.5 * 1e-3, rel=1e-4) and run.opt.param_groups[0]["lr"] == 0.5
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.full_like(p, float("nan"))
    with pytest.raises(SystemExit, match="non-finite gradient"):
        optimizer_step(run, step=0)
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_update_sums_micro_batches_keeps_old_logprobs_and_reads_the_reference():
    """The same gradient whatever the micro-batching (the loss is a weighted sum); with two epochs the
    first log-probs are kept as old_logp; with a reference its log-probs reach the loss."""
    import copy

    from comt.training import update
    from conftest import tiny_model
    seen = []

    def loss(b, logp, ref_logp):
        seen.append(ref_logp is not None)
        return -logp.sum() / 20, dict(n=float(len(logp)))
    grads = []
    for size in (1, 2, 4):
        model = tiny_model(30)
        run = update_run(model, lr=1.0, warmup=0, steps=1, grad_clip=1e9)
        bs = batches(4)
        merged = [SimpleNamespace(ids=torch.cat([b.ids for b in bs[i:i + size]]),
                                  mask=torch.cat([b.mask for b in bs[i:i + size]])) for i in range(0, 4, size)]
        stats, _ = update(run, merged, loss, step=0, empty=None)
        assert stats["n"] == 16.0
        grads.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert all(torch.allclose(g, grads[0], atol=1e-6) for g in grads)
    model = tiny_model(30)
    run = update_run(model, lr=0.1, warmup=0, steps=1)
    run.ref = copy.deepcopy(model)
    bs = batches(2)
    update(run, bs, loss, step=0, empty=None, epochs=2)
    assert all(b.old_logp is not None and b.old_logp.shape == (4,) for b in bs) and all(seen[-4:])
