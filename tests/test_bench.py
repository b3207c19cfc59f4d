import json
import subprocess
import sys

import pytest
import torch

ROOT = __file__.rsplit("/tests/", 1)[0]


@pytest.mark.cli
def test_bench_runs_and_reports_its_json_contract():
    cmd = [sys.executable, "bench.py", "--device", "cpu", "--shape", "tiny", "--batch", "2", "--prompt-len", "8",
           "--new-tokens", "4", "--train-batch", "1", "--train-seq", "16", "--repeats", "1",
           "--sft-batch", "2", "--sft-len", "16", "--rl-prompts", "2", "--rl-group", "2", "--rl-micro", "3"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    for key in ("engine_tokens_per_s", "hf_generate_tokens_per_s", "train_tokens_per_s", "sft_tokens_per_s",
                "rl_sample_s", "rl_train_s", "train_gflops", "matmul_peak_gflops_fp32"):
        assert res[key] > 0
    assert "SFT step (2 rows <= 16 tokens)" in out and "RL step (2 prompts x 2 samples x 4 tokens)" in out
    assert (res["device"], res["shape"], res["batch"]) == ("cpu", "tiny", 2)


def test_bench_samples_as_many_rl_prompts_as_it_reports(monkeypatch):
    import bench
    seen = {}
    monkeypatch.setattr(bench, "best_rl_step", lambda model, prompts, *a: seen.setdefault("n", len(prompts)) and (1, 1))
    monkeypatch.setattr(bench, "sft_step_run", lambda *a: (lambda: None, 10))
    monkeypatch.setattr(bench, "best_times", lambda fns, *a: {k: 1.0 for k in fns})
    from types import SimpleNamespace
    args = SimpleNamespace(sft_batch=2, sft_len=8, repeats=1, rl_prompts=12, rl_group=2, new_tokens=4, rl_micro=4)
    row = bench.stage_steps(None, [[1, 2]] * 4, torch.device("cpu"), None, args)  # 4 prompts: --batch 4
    assert seen["n"] == row["rl_prompts"] == 12
