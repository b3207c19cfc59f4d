"""
Estimated peak GPU memory per rank for the README's GPU recipe, under DDP and under --shard (FSDP2),
from each student's shapes and the dtypes the stages use. An estimate, not a measurement: it counts
the tensors below and nothing else (no allocator fragmentation, no CUDA context of ~0.5-1 GiB).

    python tools/memory.py                 # the README's table
    python tools/memory.py --micro-sft 4   # other recipe settings: see --help

What is counted, per parameter P:
    DDP        float32 weights 4P + gradients 4P + AdamW moments 8P on every rank, and for SFT
               DDP's gradient buckets 4P (ccrl.py all-reduces the gradients itself)
    FSDP2      the same 16P split over N ranks, plus the gathered bfloat16 weights of the blocks in
               flight (two blocks: the one computing and the one prefetched) and of the root
    --offload  the split 16P lives in CPU memory instead
    ccrl adds  a full bfloat16 copy for sampling (2P) under FSDP2 (under DDP the engine decodes the
               model itself), and the KV cache of its rows
Activations kept for backward, per token and block, in bfloat16: the inputs of every matmul and
nonlinearity (6 hidden-size vectors, k and v, 4 MLP-width vectors); with --grad-checkpoint one
hidden-size vector per block plus one block's full set. Logits: float32 at the supervised tokens
(SFT: ~100 plan tokens an example; RL: every completion token), three copies (logits, log-softmax,
gradient).
"""
import argparse
from dataclasses import dataclass

GiB = 2**30


@dataclass
class Student:
    name: str
    layers: int
    hidden: int
    mlp: int
    vocab: int
    kv_heads: int
    head_dim: int
    tied: bool
    qkv_bias: bool

    def block_params(self) -> int:
        h, kv = self.hidden, self.kv_heads * self.head_dim
        attn = 2 * h * h + 2 * h * kv + (h + 2 * kv if self.qkv_bias else 0)
        return attn + 3 * h * self.mlp + 2 * h

    def root_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    def params(self) -> int:
        return self.layers * self.block_params() + self.root_params()

    def act_bytes_per_token(self, checkpoint: bool) -> float:
        full_block = 2 * (6 * self.hidden + 2 * self.kv_heads * self.head_dim + 4 * self.mlp)
        if checkpoint:
            return self.layers * 2 * self.hidden + full_block
        return self.layers * full_block

    def kv_bytes_per_token(self) -> int:
        return self.layers * 2 * self.kv_heads * self.head_dim * 2  # k and v, bfloat16


STUDENTS = [
    Student("Qwen2.5-0.5B", 24, 896, 4864, 151936, 2, 64, True, True),
    Student("Qwen2.5-1.5B", 28, 1536, 8960, 151936, 2, 128, True, True),
    Student("Qwen2.5-7B", 28, 3584, 18944, 152064, 4, 128, False, True),
    Student("Llama-3.1-8B", 32, 4096, 14336, 128256, 8, 128, False, False),
]


def weights_bytes(s: Student, ranks: int, shard: bool, offload: bool, buckets: bool) -> float:
    P = s.params()
    if not shard:
        return (20 if buckets else 16) * P
    resident = 0 if offload else 16 * P / ranks
    return resident + 2 * (2 * s.block_params() + s.root_params())


def sft_bytes(s: Student, a, ranks: int, shard: bool, offload: bool = False) -> float:
    tokens = a.micro_sft * a.len_sft
    acts = tokens * s.act_bytes_per_token(a.grad_checkpoint)
    logits = a.micro_sft * a.sup_sft * s.vocab * 4 * 3
    return weights_bytes(s, ranks, shard, offload, True) + acts + logits


def rl_bytes(s: Student, a, ranks: int, shard: bool, offload: bool = False) -> float:
    tokens = a.micro_rl * a.len_rl
    acts = tokens * s.act_bytes_per_token(a.grad_checkpoint)
    logits = a.micro_rl * a.new_rl * s.vocab * 4 * 3
    rows = a.prompts * a.group // ranks
    cache = rows * a.len_rl * s.kv_bytes_per_token()
    sampler = 2 * s.params() if shard else 0
    return weights_bytes(s, ranks, shard, offload, False) + max(acts + logits, cache) + sampler


def table(a) -> str:
    out = ["| student | params | stage | DDP, any N | FSDP2 1 GPU, --offload | FSDP2 4 GPUs | FSDP2 8 GPUs |",
           "|---|---:|---|---:|---:|---:|---:|"]
    for s in STUDENTS:
        for stage, f in (("SFT", sft_bytes), ("CCRL", rl_bytes)):
            cells = [f(s, a, 1, False), f(s, a, 1, True, True)] + [f(s, a, n, True) for n in (4, 8)]
            fits = lambda b: f"{b / GiB:.0f}" + ("" if b < a.gpu_gib * GiB else " ✗")
            out.append(f"| {s.name} | {s.params() / 1e9:.2f}B | {stage} | " + " | ".join(map(fits, cells)) + " |")
    return "\n".join(out)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Estimated GiB per GPU for the README's GPU recipe.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--micro-sft", type=int, default=8, help="sft_comt.py --micro-batch")
    ap.add_argument("--len-sft", type=int, default=512, help="tokens per SFT row (prompt + target, padded)")
    ap.add_argument("--sup-sft", type=int, default=100, help="supervised tokens per SFT row")
    ap.add_argument("--micro-rl", type=int, default=4, help="ccrl.py --micro-batch")
    ap.add_argument("--new-rl", type=int, default=512, help="ccrl.py --max-new-tokens")
    ap.add_argument("--len-rl", type=int, default=768, help="tokens per RL row (prompt + completion)")
    ap.add_argument("--prompts", type=int, default=64, help="ccrl.py --prompts-per-step (over all ranks)")
    ap.add_argument("--group", type=int, default=8, help="ccrl.py --group-size")
    ap.add_argument("--grad-checkpoint", action="store_true", help="--grad-checkpoint in both stages")
    ap.add_argument("--gpu-gib", type=float, default=80, help="mark (✗) what does not fit in this")
    return ap.parse_args(argv)


if __name__ == "__main__":
    print(table(parse_args()))
