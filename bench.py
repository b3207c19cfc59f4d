"""
Throughput of our engine against `transformers` `generate`, and of a training step.

Both generators run the same random weights (ours saved to a temporary Hugging Face directory and
opened by `transformers`), the same B prompts of P random tokens, and sample exactly M new tokens
per row at temperature 1 (no stop tokens). Training runs forward + backward + AdamW on (B,T)
random tokens with a full-vocabulary cross-entropy, bf16 autocast when --autocast says so.
Each measurement is warmed up first (on CUDA this captures the engine's graph); ours and
`transformers` then run in turns and the best of --repeats timed runs of each is kept.

Two more rows time what the stages do, ours only, on the same random weights in float32 (as
sft_comt.py and ccrl.py train them):
  * SFT step: training.update with sft_comt.py's loss on one global batch of --sft-batch rows of random lengths in
    [--sft-len/2, --sft-len], loss on the second half of each row (the default stage-1 shape),
    in the micro-batches sft_comt.py would form.
  * RL step: --rl-prompts prompts x --rl-group samples of --new-tokens tokens from the engine,
    then ccrl.policy_update, the stage's own update (micro-batches of --rl-micro rows, gradient
    clipping, AdamW) on random advantages; random weights never stop early, so every sample is
    --new-tokens long.
The training rows also give the achieved GFLOP/s beside this device's measured matmul peak
(a 2048x2048 product, float32, and bfloat16 where the device computes it natively).

MFU (CUDA only) = achieved FLOP/s / peak bf16 FLOP/s of the card, with
FLOPs per trained token = 6 * (matmul parameters, LM head included) + 12 * layers * heads * head_dim * T.

    python bench.py --device cpu --shape tiny            # CPU, tiny model, batch 32
    python bench.py --device cuda --shape 0.5b           # GPU, Qwen2.5-0.5B shape, batch 64

Prints a short table, then one JSON line with every number.
"""
import argparse
import json
import tempfile
import time

import torch
import torch.nn.functional as F

from comt.common import pick_device, pick_dtype, seed_everything
from comt.engine import Engine
from comt.flags import COUNT, SEED
from comt.model import ModelConfig, Transformer
from comt.parallel import Dist
from rewards import RewardSettings

SHAPES = {
    # a few-million-parameter Llama, the size of the embedded default model
    "tiny": ModelConfig(model_type="llama", vocab_size=1024, hidden_size=256, intermediate_size=704,
                        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=2048, tie_word_embeddings=True),
    # Qwen2.5-0.5B dimensions
    "0.5b": ModelConfig(model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
                        num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                        rope_theta=1e6, max_position_embeddings=32768, tie_word_embeddings=True),
}
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """with Timer(device) as t: ...  -> t.seconds (waits for the GPU before reading the clock)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        synchronize(self.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.t0


def best_times(fns: dict, device, repeats: int) -> dict:
    """Warm each function up, then time them in turns (so a slow spell of a shared machine hits
    all of them alike) and keep each one's best of `repeats` runs: {name: seconds}."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            with Timer(device) as t:
                fn()
            best[name] = min(best[name], t.seconds)
    return best


def engine_run(model, prompts, new_tokens):
    engine = Engine(model)
    run = lambda: engine.generate(prompts, max_new_tokens=new_tokens, temperature=1.0, seed=0)
    assert run().mask.all(), "every row must produce exactly new_tokens tokens"
    return run


def hf_generate_run(hf, prompts, new_tokens, device):
    ids = torch.tensor(prompts, device=device)
    kw = dict(attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
              max_new_tokens=new_tokens, min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0)
    return lambda: hf.generate(ids, **kw)


def train_step_run(model, batch, seq, device, autocast, hf=False):
    """One optimizer step of forward + backward + AdamW on (batch, seq) random tokens."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(ids).logits if hf else model(ids)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def sft_step_run(model, rows: int, max_len: int, device, autocast):
    """One stage-1 update (training.update with sft_comt.py's loss) on `rows` random rows of
    max_len/2..max_len tokens, loss on their second halves, in micro-batches as sft_comt.py groups
    them -> (step function, tokens per step)."""
    from argparse import Namespace

    from comt.training import Run, Schedule, token_batches, update
    from sft_comt import SFTBatch
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(max(2, max_len // 2), max_len + 1, (rows,), generator=g).tolist()
    examples = [(torch.randint(0, model.config.vocab_size, (n,), generator=g).tolist(),
                 [False] * (n // 2) + [True] * (n - n // 2)) for n in lengths]
    micro = [SFTBatch(ids, mask).to(device) for _, ids, mask in
             token_batches([e for e, _ in examples], [m for _, m in examples], rows, 0)]
    n_sup = sum(sum(m[1:]) for _, m in examples)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast)
    model.train()
    run = Run(args=Namespace(out="-"), dist=Dist(), device=device, tok=None, model=model, opt=opt, autocast=ctx,
              schedule=Schedule(lr=1e-5, warmup=0))
    loss = lambda b, logp, _: (-logp.sum() / n_sup, {})
    return lambda: update(run, micro, loss, 0, micro[0]), sum(lengths)


def timed_rl_step(model, engine, opt, prompts, group: int, new_tokens: int, micro: int, device,
                  autocast) -> tuple[float, float]:
    """One RL step: sample `group` completions per prompt, then ccrl.policy_update (ccrl.py's own
    update: its loss, micro-batches and gradient clipping, default settings) on all of them with
    random advantages -> (sampling seconds, training seconds)."""
    from ccrl import Kept, Rollout, Run, Sampling, Update, parse_args, policy_update
    from comt.flags import from_flags
    from comt.training import Schedule
    args = parse_args(["--micro-batch", str(micro), "--max-new-tokens", str(new_tokens)])
    ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast)
    run = Run(args=args, dist=Dist(), device=device, tok=None, model=model, opt=opt, autocast=ctx,
              schedule=from_flags(Schedule, args), sampling=from_flags(Sampling, args), scoring=RewardSettings(),
              update=from_flags(Update, args), engine=engine)
    model.eval()
    with Timer(device) as sampling:
        s = engine.generate(prompts, num_samples=group, max_new_tokens=new_tokens, temperature=1.0, seed=0)
    model.train()
    with Timer(device) as training:
        seqs = [prompts[i] + s.completion(r)[0] for r, i in enumerate(s.prompt_index.tolist())]
        plens = [len(prompts[i]) for i in s.prompt_index.tolist()]
        adv = torch.randn(len(seqs), generator=torch.Generator().manual_seed(0)).tolist()
        ro = Rollout(seqs, plens, judged=[], group_size=group, prompt_tokens=sum(map(len, prompts)),
                     completion_tokens=int(s.mask.sum()), problems=[])
        kept = Kept(None, list(range(len(seqs))), adv, (float(s.mask.sum()), float(len(seqs))))
        policy_update(run, ro, kept, 0)
    return sampling.seconds, training.seconds


def best_rl_step(model, prompts, group, new_tokens, micro, device, autocast, repeats: int) -> tuple[float, float]:
    """(sampling, training) seconds of the fastest of `repeats` RL steps, after one warm-up step."""
    engine = Engine(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    runs = [timed_rl_step(model, engine, opt, prompts, group, new_tokens, micro, device, autocast)
            for _ in range(repeats + 1)][1:]
    return min(runs, key=sum)


def matmul_peak(device, dtype, repeats: int, n: int = 2048) -> float:
    """FLOP/s of an n x n matrix product, best of `repeats`."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    return 2 * n ** 3 / best_times({"mm": lambda: a @ b}, device, repeats)["mm"]


def train_flops_per_token(cfg: ModelConfig, model: Transformer, seq: int) -> float:
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return 6 * matmul + 12 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * seq


def peak_flops(device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda")
    ap.add_argument("--shape", default="tiny", choices=list(SHAPES), help="tiny: 3M-param Llama; 0.5b: Qwen2.5-0.5B dims")
    ap.add_argument("--dtype", default="auto", help="weights for generation: auto (bf16 on GPU, fp32 on CPU)")
    # generation
    ap.add_argument("--batch", type=COUNT, default=None, help="prompts per batch (None: 64 on GPU, 32 on CPU)")
    ap.add_argument("--prompt-len", type=COUNT, default=128, help="tokens per prompt")
    ap.add_argument("--new-tokens", type=COUNT, default=256, help="sampled tokens per row")
    # training
    ap.add_argument("--train-batch", type=COUNT, default=8, help="sequences per training step")
    ap.add_argument("--train-seq", type=COUNT, default=512, help="tokens per training sequence")
    ap.add_argument("--autocast", default="auto", choices=["auto", "bf16", "none"],
                    help="bf16 autocast for training; auto: on for CUDA and for CPUs with native bf16")
    # the stages' steps
    ap.add_argument("--sft-batch", type=COUNT, default=8, help="rows of the SFT step (sft_comt.py's --batch)")
    ap.add_argument("--sft-len", type=COUNT, default=256, help="longest row of the SFT step, in tokens")
    ap.add_argument("--rl-prompts", type=COUNT, default=8, help="prompts of the RL step (ccrl.py's --prompts-per-step)")
    ap.add_argument("--rl-group", type=COUNT, default=8, help="samples per prompt of the RL step (--group-size)")
    ap.add_argument("--rl-micro", type=COUNT, default=32, help="rows per forward/backward of the RL update")
    # measurement
    ap.add_argument("--repeats", type=COUNT, default=3, help="timed runs per measurement (best kept)")
    ap.add_argument("--skip-hf", action="store_true", help="measure only our engine and training loop")
    ap.add_argument("--seed", type=SEED, default=0, help="seed for weights and prompts")
    args = ap.parse_args()

    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    batch = args.batch or (64 if device.type == "cuda" else 32)
    autocast = args.autocast == "bf16" or (args.autocast == "auto" and (device.type == "cuda" or cpu_has_bf16()))
    seed_everything(args.seed)
    cfg = SHAPES[args.shape]
    with torch.device(device):
        model = Transformer(cfg).init_weights()
    model.eval().to(dtype)
    prompts = torch.randint(0, cfg.vocab_size, (batch, args.prompt_len)).tolist()
    res = dict(device=str(device), device_name=torch.cuda.get_device_name(device) if device.type == "cuda"
               else "cpu", shape=args.shape, params=model.num_params(), dtype=str(dtype).removeprefix("torch."),
               batch=batch, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
               torch=torch.__version__)
    hf = None if args.skip_hf else transformers_copy(model, dtype, device)
    res |= generation_rows(model, hf, prompts, device, args)
    res |= training_rows(model.float(), hf.float() if hf is not None else None, device, autocast, args)
    del hf
    res |= stage_steps(model.float(), prompts, device, autocast, args)
    sft_flops = train_flops_per_token(cfg, model, res["sft_tokens"] / args.sft_batch)  # at the mean row length
    res |= dict(train_gflops=train_flops_per_token(cfg, model, args.train_seq) * res["train_tokens_per_s"] / 1e9,
                sft_gflops=sft_flops * res["sft_tokens_per_s"] / 1e9,
                matmul_peak_gflops_fp32=matmul_peak(device, torch.float32, args.repeats) / 1e9,
                matmul_peak_gflops_bf16=matmul_peak(device, torch.bfloat16, args.repeats) / 1e9
                if device.type == "cuda" or cpu_has_bf16() else None)
    print_table(res)
    print(json.dumps(res))


def transformers_copy(model, dtype, device):
    """The same weights opened by `transformers` (saved to a temporary Hugging Face directory)."""
    from transformers import AutoModelForCausalLM
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return AutoModelForCausalLM.from_pretrained(tmp, dtype=dtype).to(device).eval()


def generation_rows(model, hf, prompts, device, args) -> dict:
    """Sampled tokens per second of our engine and (hf given) of transformers' generate."""
    gen = {"ours": engine_run(model, prompts, args.new_tokens)}
    if hf is not None:
        gen["hf"] = hf_generate_run(hf, prompts, args.new_tokens, device)
    t = best_times(gen, device, args.repeats)
    new = len(prompts) * args.new_tokens
    res = dict(engine_tokens_per_s=new / t["ours"], engine_ms_per_step=1e3 * t["ours"] / args.new_tokens)
    if hf is not None:
        import transformers
        res |= dict(transformers=transformers.__version__, hf_generate_tokens_per_s=new / t["hf"],
                    hf_ms_per_step=1e3 * t["hf"] / args.new_tokens, engine_speedup=t["hf"] / t["ours"])
    return res


def training_rows(model, hf, device, autocast: bool, args) -> dict:
    """Training tokens per second (fp32 master weights, bf16 autocast if enabled), ours and hf's; MFU on a GPU."""
    train = {"ours": train_step_run(model, args.train_batch, args.train_seq, device, autocast)}
    if hf is not None:
        train["hf"] = train_step_run(hf, args.train_batch, args.train_seq, device, autocast, hf=True)
    t = best_times(train, device, args.repeats)
    tokens = args.train_batch * args.train_seq
    peak = peak_flops(device)
    res = dict(train_autocast_bf16=autocast, train_batch=args.train_batch, train_seq=args.train_seq,
               train_tokens_per_s=tokens / t["ours"],
               mfu=train_flops_per_token(model.config, model, args.train_seq) * tokens / t["ours"] / peak
               if peak else None)
    if hf is not None:
        res["hf_train_tokens_per_s"] = tokens / t["hf"]
    return res


def stage_steps(model, prompts, device, autocast, args) -> dict:
    """The SFT-step and RL-step rows (ours only)."""
    sft, tokens = sft_step_run(model, args.sft_batch, args.sft_len, device, autocast)
    t = best_times({"sft": sft}, device, args.repeats)["sft"]
    rl_prompts = [prompts[i % len(prompts)] for i in range(args.rl_prompts)]  # as many as reported, whatever --batch
    sample_s, train_s = best_rl_step(model, rl_prompts, args.rl_group, args.new_tokens, args.rl_micro, device,
                                     autocast, args.repeats)
    return dict(sft_batch=args.sft_batch, sft_len=args.sft_len, sft_tokens=tokens, sft_step_s=t,
                sft_tokens_per_s=tokens / t, rl_prompts=len(rl_prompts), rl_group=args.rl_group, rl_sample_s=sample_s,
                rl_train_s=train_s)


def cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def print_table(r: dict):
    fmt = lambda v: "-" if v is None else f"{v:,.0f}"
    print(f"{r['shape']} on {r['device_name']} ({r['params'] / 1e6:.1f}M params, {r['dtype']}), "
          f"batch {r['batch']}, {r['prompt_len']}-token prompts, {r['new_tokens']} new tokens")
    print(f"{'':28}{'ours':>14}{'transformers':>14}{'ratio':>8}")
    hf_gen = r.get("hf_generate_tokens_per_s")
    ratio = f"{r['engine_tokens_per_s'] / hf_gen:.2f}x" if hf_gen else "-"
    print(f"{'generate new tokens/s':28}{fmt(r['engine_tokens_per_s']):>14}{fmt(hf_gen):>14}{ratio:>8}")
    ms = lambda v: "-" if v is None else f"{v:.2f}"
    print(f"{'  ms per token step':28}{ms(r['engine_ms_per_step']):>14}{ms(r.get('hf_ms_per_step')):>14}")
    hf_tr = r.get("hf_train_tokens_per_s")
    ratio = f"{r['train_tokens_per_s'] / hf_tr:.2f}x" if hf_tr else "-"
    print(f"{'train tokens/s':28}{fmt(r['train_tokens_per_s']):>14}{fmt(hf_tr):>14}{ratio:>8}")
    if r["mfu"] is not None:
        print(f"{'  MFU':28}{100 * r['mfu']:>13.1f}%")
    print(f"{'  GFLOP/s':28}{r['train_gflops']:>14,.1f}")
    print(f"SFT step ({r['sft_batch']} rows <= {r['sft_len']} tokens): {r['sft_step_s']:.3f} s, "
          f"{r['sft_tokens_per_s']:,.0f} tokens/s, {r['sft_gflops']:,.1f} GFLOP/s")
    rows = r["rl_prompts"] * r["rl_group"]
    print(f"RL step ({r['rl_prompts']} prompts x {r['rl_group']} samples x {r['new_tokens']} tokens): "
          f"sampling {r['rl_sample_s']:.2f} s + training {r['rl_train_s']:.2f} s "
          f"({rows * r['new_tokens'] / r['rl_sample_s']:,.0f} sampled tokens/s)")
    bf16 = r["matmul_peak_gflops_bf16"]
    print(f"matmul peak: {r['matmul_peak_gflops_fp32']:,.1f} GFLOP/s float32"
          + (f", {bf16:,.1f} bfloat16" if bf16 else " (no native bfloat16)"))


if __name__ == "__main__":
    main()
