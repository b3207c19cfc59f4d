"""
Fingerprint what the stages do, to show that a change of code changed no behaviour: the same tiny
runs from the shipped base (CoMT-SFT, CoT-SFT, CCRL with KL and two PPO epochs, CCRL under brier
with a plan weight, outcome GRPO), then SHA-256 of each run's log (timings and
memory left out), weights and examples file, and of evaluate.py's `results` on checkpoints given
with --ckpt. Run it on the code before and after, from the repository root, and compare the JSON.

    python tools/behaviour.py --json before.json [--ckpt runs/exp/seed0/comt_sft runs/exp/seed0/comt_ccrl]
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = "runs/behaviour"  # the runs' --out, relative to ROOT (their logs then name the same paths in any checkout)
OUT = os.path.join(ROOT, REL)
MARK = ".made_by_behaviour"  # what tells a folder this tool made from anything else
RL = ["--steps", "3", "--prompts-per-step", "2", "--group-size", "4", "--max-new-tokens", "96", "--eval-n", "4",
      "--eval-every", "2", "--lr", "1e-3", "--log-examples", "2"]
RUNS = {
    "sft_comt": ["sft_comt.py", "--steps", "30", "--eval-n", "8", "--log-every", "5"],
    "sft_cot": ["sft_comt.py", "--format", "cot", "--steps", "30", "--eval-n", "8", "--log-every", "5"],
    "ccrl_kl_ppo": ["ccrl.py", "--init", f"{REL}/sft_comt", *RL, "--kl-coef", "0.1", "--ppo-epochs", "2"],
    "ccrl_brier_plan": ["ccrl.py", "--init", f"{REL}/sft_comt", *RL, "--conf-form", "brier", "--plan-weight", "0.5"],
    "grpo": ["ccrl.py", "--init", f"{REL}/sft_cot", *RL, "--reward", "outcome"],
}


TIMINGS = ("_s", "seconds", "sample_share", "cpu_wait_share", "shared_machine")  # what a clock or the load measured


def timeless(line: str) -> dict:
    return {k: v for k, v in json.loads(line).items() if not k.endswith(TIMINGS) and k != "peak_memory_gb"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def fingerprint(out: str) -> dict:
    with open(os.path.join(out, "log.jsonl")) as f:
        rows = [timeless(line) for line in f]
    res = dict(log=sha(json.dumps(rows).encode()), log_lines=len(rows))
    for name in ("model.safetensors", "examples.txt"):
        path = os.path.join(out, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                res[name] = sha(f.read())
    return res


def clear_out():
    """Make OUT ready for the runs: delete the runs and evaluation an earlier call made there, nothing
    else; a folder this tool did not make is refused."""
    if os.path.lexists(OUT) and not (os.path.isdir(OUT) and not os.path.islink(OUT)
                                     and os.path.isfile(os.path.join(OUT, MARK))):
        raise SystemExit(f"{OUT}: exists and was not made by tools/behaviour.py; move it away (nothing was deleted)")
    os.makedirs(OUT, exist_ok=True)
    open(os.path.join(OUT, MARK), "w").close()
    for name in [*RUNS, "eval.json"]:
        path = os.path.join(OUT, name)
        if os.path.islink(path) or os.path.isfile(path):
            os.remove(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--json", required=True, help="where the fingerprints go")
    ap.add_argument("--ckpt", nargs="*", default=[], help="checkpoints evaluate.py also answers (40 problems per split)")
    args = ap.parse_args()
    clear_out()
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    prints = {}
    for name, cmd in RUNS.items():
        subprocess.run([sys.executable, *cmd, "--out", f"{REL}/{name}"], check=True, env=env, stdout=subprocess.DEVNULL,
                       cwd=ROOT)
        prints[name] = fingerprint(f"{OUT}/{name}")
        print(name, prints[name], flush=True)
    if args.ckpt:
        path = f"{OUT}/eval.json"
        subprocess.run([sys.executable, "evaluate.py", "--ckpt", *map(os.path.abspath, args.ckpt), "--n", "40",
                        "--no-plots", "--json", path], check=True, env=env, stdout=subprocess.DEVNULL, cwd=ROOT)
        with open(path) as f:
            prints["evaluate"] = dict(results=sha(json.dumps(json.load(f)["results"], sort_keys=True).encode()))
        print("evaluate", prints["evaluate"])
    with open(args.json, "w") as f:
        json.dump(prints, f, indent=1)


if __name__ == "__main__":
    main()
