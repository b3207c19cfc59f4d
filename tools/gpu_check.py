"""
One-shot GPU check of --shard: a Llama-shaped model of random weights (built from a config with the
shipped tokenizer, nothing downloaded), a few steps of each stage under FSDP2 on one GPU, and a
short table of peak memory, throughput and the sampling/training split from the runs' summaries.

    python tools/gpu_check.py                  # ~0.5B parameters, on the GPU (a few minutes)
    python tools/gpu_check.py --size tiny      # checks this script on a CPU in seconds

Each stage runs as `torchrun --nproc_per_node 1 <stage> --shard` on the embedded default data; the
numbers say whether the sharded path runs and what it costs, not what the model learns (its
weights are random).
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SIZES = {"0.5b": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                      num_key_value_heads=4),
         "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2)}


def build(out: str, size: str):
    """A random Llama-shaped model with the shipped base's tokenizer, saved as a Hugging Face directory."""
    import torch
    from transformers import AutoTokenizer

    from comt.model import ModelConfig, Transformer
    tok = AutoTokenizer.from_pretrained(os.path.join(ROOT, "models/base"))
    cfg = ModelConfig(model_type="llama", vocab_size=len(tok), max_position_embeddings=1024, **SIZES[size])
    torch.manual_seed(0)
    model = Transformer(cfg).init_weights()
    model.config.eos_token_id, model.config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return model.num_params()


def stage(script: str, args: list[str]) -> dict:
    """Run a stage under torchrun with one process; its summary line."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", "29533", script,
           "--shard", *args]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{' '.join(cmd)}: exit {res.returncode}\n{res.stderr[-3000:]}")
    out = args[args.index("--out") + 1]
    with open(os.path.join(out, "log.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    steps = [r for r in rows if "step" in r and not r.get("eval")]
    mean = lambda k: sum(r[k] for r in steps) / len(steps) if steps and k in steps[0] else float("nan")
    return dict(rows[-1], step_tokens_per_s=mean("tokens_per_s"), gather_s=mean("gather_s"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="0.5b", help="model shape")
    ap.add_argument("--dir", default="runs/gpu_check", help="where the model and runs go")
    a = ap.parse_args()
    model = os.path.join(a.dir, "model")
    n = build(model, a.size)
    sft = stage("sft_comt.py", ["--model", model, "--out", os.path.join(a.dir, "sft"), "--steps", "6", "--batch",
                                "16", "--micro-batch", "8", "--eval-n", "0", "--save-every", "6"])
    rl = stage("ccrl.py", ["--init", os.path.join(a.dir, "sft"), "--out", os.path.join(a.dir, "ccrl"), "--steps", "3",
                           "--prompts-per-step", "8", "--group-size", "8", "--max-new-tokens", "128", "--eval-n", "0",
                           "--micro-batch", "16"])
    print(f"| {n / 1e6:,.0f}M parameters, FSDP2 on 1 rank | peak GiB | tokens/s | sampling share | gather s/step |")
    print("|---|---:|---:|---:|---:|")
    print(f"| SFT (6 steps x 16 rows) | {sft.get('peak_memory_gb', '-')} | {sft['tokens_per_s']} | - | - |")
    print(f"| CCRL (3 steps x 8 x 8 samples) | {rl.get('peak_memory_gb', '-')} | {rl['step_tokens_per_s']:.0f} | "
          f"{rl['sample_share']} | {rl['gather_s']:.3f} |")


if __name__ == "__main__":
    main()
