"""comt/training.py: what both stages share. Here: the contention flag, from the kernel's run-queue
delay of the run's own threads."""
import json
import os
import subprocess
import sys

import pytest

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
