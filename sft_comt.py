"""
Stage 1: supervised fine-tuning on Chain-of-Meta-Thought targets (CoMT), or on whole worked
solutions (CoT-SFT, the paper's baseline) with --format cot.

    python sft_comt.py                                   # CoMT on the embedded default -> runs/sft_comt
    python sft_comt.py --format cot --out runs/sft_cot   # baseline: same data, optimiser and budget
    python sft_comt.py --show-mask                       # print one example, supervised tokens marked
    python sft_comt.py --resume                          # continue runs/sft_comt from its checkpoint
    torchrun --nproc_per_node 2 sft_comt.py              # DDP: gloo on CPU, nccl on GPU
    torchrun --nproc_per_node 8 sft_comt.py --shard ...  # FSDP2: a student one GPU cannot hold
    python sft_comt.py --model DIR --data gsm8k:train --targets plans.jsonl --out runs/gsm8k_comt

Algorithm
    Each example is prompt + target; only target tokens are supervised (tasks.encode_example):
      comt (CoMT)  "Plan:\\n<plan>\\nSolution:\\n": the abstract plan and the marker that opens the
                   execution. Nothing after the marker and no stop token: stage 1 never shows an
                   execution of a training problem; the model goes on from the marker with what its
                   base already knows.
      cot          the complete trajectory: the same plan and marker, then "<solution>\\nAnswer: N"
                   and the stop token. The two arms differ only in whether execution is supervised.
    Replay (--replay, a share of every global batch, the same for both arms): documents of the base
    model's own pretraining corpus (base.py: worked problems in fresh frames with their plan in the
    prompt, loss on their execution), drawn fresh for each step. They stand in for a large
    pretrained model's resistance to forgetting what the SFT data never shows; without them,
    training on plans alone teaches "after a line comes another plan line" and erases the base's
    execution (measured on an earlier base: 66% of 200 test problems with --replay 0.25, 0% without).
    Budget: stage 1's job is to teach the template; chosen on val from the shipped base (seed 0, 200
    problems, then CCRL at its defaults): 100 steps write the plan on 100% of val and answer 80.0%
    (95.5% after CCRL), 200 steps 90.5% (94.0%), 400 steps 91.5% (95.0%).
    Loss = mean token cross-entropy over all supervised tokens of the global batch: each
    micro-batch adds sum(CE) / (supervised tokens in the global batch), so gradient accumulation
    and the split across ranks do not change the result. AdamW, linear warm-up, cosine decay to
    10% of the peak, gradient clipping. Batches: every epoch is shuffled with the seed and cut into
    global batches of similar lengths (length bucketing; the pad share is logged). A model with a
    chat template gets the question as the user turn and the target as the assistant turn.

Ranks: under torchrun each rank takes every N-th row of the global batch. DDP keeps the whole model
and optimiser on each; --shard (FSDP2, training.py "Sharding") splits weights, gradients and AdamW
state over the ranks and gathers each block's weights for its forward and backward, with the same
loss and clipping as one process (bf16 compute over fp32 master weights on GPU).

Checkpoints: `--out` is a Hugging Face directory (config.json, model.safetensors, tokenizer) plus
train_state.pt (optimiser, step, RNG, arguments; under --shard the optimiser is saved per rank in
optimizer_shards/ and the full weights are gathered to rank 0), replaced every --save-every steps
and at the end in a way no kill can break (lifecycle.save_checkpoint). Ctrl-C/SIGTERM saves before
exiting; a non-finite loss stops the run without touching the last checkpoint; --resume continues
it exactly (the data position is a function of the step).

Deviations from the paper: the paper fine-tunes 4-8B models on teacher-written (LLaMA-3.1-70B)
meta-thoughts for GSM8K/SVAMP; the default here uses the exact plans of the synthetic world's
programs and the small base model that base.py built (models/base), with budgets sized for a
laptop CPU. Replay is ours (see above): a 4-8B model keeps its execution skill through a short
SFT on plans, a 3M-parameter one does not. The paper's text format and hyperparameters are not
public; ours are documented in tasks.py and --help.
"""
import argparse
import contextlib
import functools
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from common import (COUNT, NONNEG, NONNEG_INT, POSITIVE, SEED, check_checkpoint, load_model, log_json, number, pad_id,
                    seed_everything)
from corpus import encode_doc, taboo_words, worked_doc
from engine import Engine
from evaluate import greedy_judgements
from lifecycle import (StopRequest, add_run_args, begin_run, fingerprint, mark_given, restore_train_state, save_or_stop,
                       save_run, start_log)
from rewards import has_digit
from show import visible
from tasks import (RECIPES, clean_solution, encode_example, fitting, make_split, problems_for_cli, prompts_that_fit,
                   text_lines)
import training
from training import (Dist, all_reduce_sum, as_many_as_any_rank, autocast_for, clip_grads, close_distributed, cosine_lr,
                      gathered_copy, length_groups, no_grad_sync, pad_rows, peak_memory, set_up_shard, target_logprobs)

DEFAULT_BASE = "models/base"


# -----------------------------------------------------------------------------
# Data


def read_targets(path: str) -> dict:
    """--targets JSONL: one {"id": ..., "plan": ..., "solution": ...} per line (either text optional;
    a plan is a text without digits). Anything else is refused naming the file and line."""
    out, lines = {}, {}
    try:
        for lineno, line in enumerate(text_lines(path), 1):
            if not line.strip():
                continue
            where = f"--targets {path}:{lineno}"
            try:
                row = json.loads(line)
                key = str(row["id"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise SystemExit(f"{where}: expected a JSON object with an 'id' (and 'plan'/'solution')") from None
            if key in out:
                raise SystemExit(f"{where}: id {key!r} repeats line {lines[key]}; each problem takes one target")
            bad = [k for k in ("plan", "solution") if k in row and not isinstance(row[k], str)]
            if bad:
                raise SystemExit(f"{where}: '{bad[0]}' must be a text, not {type(row[bad[0]]).__name__}")
            if has_digit(row.get("plan") or ""):
                raise SystemExit(f"{where}: the plan has a digit; a CoMT plan names quantities, never numbers "
                                 f"(teacher.py filters them)")
            out[key], lines[key] = row, lineno
    except OSError as e:
        raise SystemExit(f"--targets {path}: cannot read it ({e.strerror})") from None
    except ValueError as e:
        raise SystemExit(f"--targets {e}") from None
    return out


def load_train_problems(args) -> list:
    """The training problems, with their plan/solution texts from --targets where given."""
    problems = problems_for_cli(args.data, args.n_train, args.limit, args.seed)
    targets = read_targets(args.targets) if args.targets else {}
    unmatched = len(targets.keys() - {p.id for p in problems})
    if targets and unmatched == len(targets):
        raise SystemExit(f"--targets {args.targets}: none of its {len(targets)} ids is a problem of --data {args.data} "
                         f"(its ids look like {problems[0].id!r}; were the targets written for other data?)")
    if unmatched:
        print(f"--targets {args.targets}: {unmatched} of its {len(targets)} ids match no problem of --data "
              f"{args.data}; they are not used", file=sys.stderr)
    for p in problems:
        t = targets.get(p.id, {})
        p.plan = t.get("plan", p.plan)
        p.solution = t.get("solution", p.solution)
        if p.solution and ("####" in p.solution or "<<" in p.solution):
            p.solution = clean_solution(p.solution)
    fields = ("plan",) if args.format == "comt" else ("plan", "solution")
    missing = [p.id for p in problems if not all(getattr(p, f) for f in fields)]
    if missing:
        raise SystemExit(f"--format {args.format} needs {' and '.join(fields)} texts for every problem; {len(missing)} of "
                         f"{len(problems)} from {args.data} have none (first: {missing[0]}). Write them with "
                         f"teacher.py and pass --targets PATH (JSONL rows of id, plan, solution).")
    return problems


@dataclass
class SFTBatch:
    ids: torch.Tensor  # (B,T) right-padded with the pad id
    sup: torch.Tensor  # (B,T) bool: token is supervised (predicted from the tokens before it)

    def to(self, device) -> "SFTBatch":
        return SFTBatch(self.ids.to(device), self.sup.to(device))


@functools.lru_cache(maxsize=2)
def global_batches(lengths: tuple[int, ...], batch: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch of global batches (example indices): shuffled by (seed, epoch), then sorted by
    length inside windows of 32 batches so rows of a batch have similar lengths; the last partial
    batch is dropped."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(lengths), generator=g).tolist()
    window = 32 * batch
    order = [i for w in range(0, len(order), window) for i in sorted(order[w:w + window], key=lengths.__getitem__)]
    batches = [order[i:i + batch] for i in range(0, len(order) - batch + 1, batch)]
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


def batch_indices(step: int, lengths: tuple[int, ...], batch: int, seed: int) -> list[int]:
    """The global batch of optimiser step `step` (a pure function of step: resume needs no state)."""
    per_epoch = len(lengths) // batch
    return global_batches(lengths, batch, seed, step // per_epoch)[step % per_epoch]


def global_batch(step: int, examples: list, lengths: tuple[int, ...], batch: int, replay: float, seed: int,
                 tok) -> tuple[list, list]:
    """The examples of optimiser step `step`: (SFT examples, replay documents), round(replay *
    batch) of the batch's rows being replay."""
    n_replay = round(replay * batch)
    sft = [examples[i] for i in batch_indices(step, lengths, batch - n_replay, seed)]
    return sft, replay_examples(tok, step, n_replay, seed)


def replay_examples(tok, step: int, n: int, seed: int) -> list[tuple[list[int], list[bool]]]:
    """n documents of the kind the base was pretrained on, for step `step` (a pure function of the
    step, so resume needs no state): worked problems in fresh frames with their plan in the prompt,
    supervised on "Solution:" and after it (corpus.worked_doc), drawn from the train recipe only
    (train phrasings, 2-5 steps, train number ranges, no distractor, no OOD frame's noun), so that
    stage 1 sees nothing of an OOD split."""
    rng, taboo = random.Random(f"replay-{seed}-{step}"), taboo_words(ood_nouns=True)
    return [encode_doc(tok, *worked_doc(rng, taboo, world=False)) for _ in range(n)]


def collate(examples: list[tuple[list[int], list[bool]]], pad: int) -> SFTBatch:
    return SFTBatch(*pad_rows([ids for ids, _ in examples], [sup for _, sup in examples], pad))


def show_mask(tok, ids: list[int], sup: list[bool]) -> str:
    """The example's text with supervised tokens inside [[ ]]."""
    out, inside = [], False
    for t, s in zip(ids, sup):
        if s != inside:
            out.append("[[" if s else "]]")
            inside = s
        out.append(tok.decode([t]))
    return "".join(out) + ("]]" if inside else "")


# -----------------------------------------------------------------------------
# Training step


def micro_loss_sum(model, b: SFTBatch) -> torch.Tensor:
    """Sum of token cross-entropies over the supervised tokens of a micro-batch."""
    return -target_logprobs(model, b.ids, b.sup).sum()


def train_step(model, opt, micro: list[SFTBatch], n_sup: int, world: int, grad_clip: float,
               autocast=contextlib.nullcontext()) -> tuple[float, float]:
    """One optimiser step over this rank's micro-batches of the global batch, whose supervised
    tokens (all ranks) number n_sup. Returns (global mean token loss, gradient norm); a
    non-finite loss or gradient returns before the update."""
    loss_sum = torch.zeros((), device=micro[0].ids.device)
    for k, b in enumerate(micro):
        last = k == len(micro) - 1
        with (contextlib.nullcontext() if last or world == 1 else no_grad_sync(model)):
            with autocast:
                s = micro_loss_sum(model, b)
            (s * world / n_sup).backward()  # DDP and FSDP2 average gradients over ranks: undo it
        loss_sum += s.detach()
    loss = all_reduce_sum(loss_sum, Dist(world=world)).item() / n_sup
    norm = clip_grads(model, grad_clip)
    if not (math.isfinite(loss) and math.isfinite(norm)):
        opt.zero_grad(set_to_none=True)
        return loss, norm
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss, norm


# -----------------------------------------------------------------------------
# Quick check on test problems


def quick_eval(model, tok, args) -> dict:
    """Greedy answers to `test` problems (evaluate.greedy_judgements, as evaluate.py answers them):
    accuracy, the share that open with a digit-free plan, and the first completion."""
    problems = prompts_that_fit(tok, make_split("test", args.eval_n, args.seed), args.eval_max_new,
                                model.config.max_position_embeddings, "quick-check problems (prompt + --eval-max-new)")
    judged = greedy_judgements(Engine(model, pad_id=pad_id(tok)), tok, problems, args.eval_max_new, desc="quick check")
    return dict(test_acc=sum(j.correct for j in judged) / len(judged),
                plan_rate=sum(j.plan for j in judged) / len(judged), example=judged[0].text)


# -----------------------------------------------------------------------------
# Main


def format_name(text: str) -> str:
    if text == "meta":
        print("--format meta is now called --format comt", file=sys.stderr)
        return "comt"
    return text


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Stage 1: CoMT supervised fine-tuning (or CoT-SFT with --format cot).",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--format", type=format_name, choices=("comt", "cot"), default="comt",
                    help="comt: supervise plan + 'Solution:' marker (CoMT); cot: plan, solution, answer and stop "
                    "(the CoT baseline); 'meta' is read as comt")
    ap.add_argument("--out", default=None, help="output directory (default runs/sft_comt, or runs/sft_cot for cot)")
    # model and data
    ap.add_argument("--model", default=DEFAULT_BASE, help="Hugging Face model directory to start from "
                    "(the default is the shipped base model that base.py builds)")
    ap.add_argument("--data", default="train", help="a synthetic split, a benchmark (gsm8k:train), or a JSONL path")
    ap.add_argument("--targets", default=None, help="JSONL of id -> plan/solution texts (from teacher.py)")
    ap.add_argument("--n-train", type=COUNT, default=8000, help="problems of a synthetic split")
    ap.add_argument("--limit", type=COUNT, default=None, help="use only the first N rows of real data")
    ap.add_argument("--show-mask", action="store_true", help="print the first example with supervised tokens "
                    "in [[ ]] and exit")
    # optimisation
    ap.add_argument("--steps", type=COUNT, default=100, help="optimiser steps (chosen on val: enough to teach the "
                    "template; see the header)")
    ap.add_argument("--batch", type=COUNT, default=8, help="global batch (examples per step, over all ranks)")
    ap.add_argument("--micro-batch", type=COUNT, default=8, help="examples per forward/backward on one rank")
    ap.add_argument("--lr", type=POSITIVE, default=5e-4, help="peak learning rate")
    ap.add_argument("--warmup", type=NONNEG_INT, default=20, help="warm-up steps")
    ap.add_argument("--weight-decay", type=NONNEG, default=0.0, help="AdamW weight decay")
    ap.add_argument("--grad-clip", type=POSITIVE, default=1.0, help="clip the gradient norm to this")
    ap.add_argument("--replay", type=number(lo=0, below=1), default=None, help="share of every batch given to "
                    "documents of the base's pretraining corpus (default 0.25 on synthetic data, 0 otherwise)")
    ap.add_argument("--seed", type=SEED, default=0, help="seed for data order and evaluation problems")
    # runtime
    add_run_args(ap, save_every=100)
    ap.add_argument("--log-every", type=COUNT, default=20, help="steps between JSON log lines")
    ap.add_argument("--eval-n", type=NONNEG_INT, default=200, help="test problems for the final check (0: skip)")
    ap.add_argument("--eval-max-new", type=COUNT, default=256, help="tokens generated per test problem")
    args = mark_given(ap, argv, ap.parse_args(argv))
    args.out = args.out or ("runs/sft_comt" if args.format == "comt" else "runs/sft_cot")
    if args.replay is None:
        args.replay = 0.25 if args.data in RECIPES else 0.0
    return args


def training_examples(args, tok, context: int, world: int) -> list[tuple[list[int], list[bool]]]:
    """The encoded training examples [(ids, supervised)], those longer than the context skipped."""
    examples = [encode_example(tok, p, args.format) for p in load_train_problems(args)]
    examples = fitting(examples, [len(ids) for ids, _ in examples], context, "training examples")
    if len(examples) < args.batch - round(args.replay * args.batch):
        raise SystemExit(f"--batch {args.batch} is larger than the {len(examples)} training examples")
    if args.batch % world:
        raise SystemExit(f"--batch {args.batch} must be divisible by the {world} ranks")
    return examples


@dataclass
class Run(training.Run):
    """The SFT run: the common record and its data; totals: token counts and seconds."""
    ddp: torch.nn.Module | None = None  # the model under DDP on several ranks without --shard, else the model
    examples: list = field(default_factory=list)  # [(ids, supervised)]
    lengths: tuple = ()  # their token lengths (the batching reads them)


def sft_step(run: Run, step: int) -> dict:
    """One optimiser step on the step's global batch (this rank's share); returns its log line."""
    args, dist, pad, totals = run.args, run.dist, pad_id(run.tok), run.totals
    t0 = time.time()
    sft, replay = global_batch(step, run.examples, run.lengths, args.batch, args.replay, args.seed, run.tok)
    rows = sft + replay
    n_sup = sum(sum(s[1:]) for _, s in rows)
    mine = rows[dist.rank::dist.world]
    micro = [collate([mine[i] for i in g], pad).to(run.device)
             for g in length_groups([len(ids) for ids, _ in mine], args.micro_batch)]
    if args.shard:  # padded with micro-batches that supervise nothing
        micro = as_many_as_any_rank(micro, collate([([pad] * 2, [False] * 2)], pad).to(run.device), dist)
    for g in run.opt.param_groups:
        g["lr"] = cosine_lr(step, args.steps, args.lr, args.warmup)
    loss, norm = train_step(run.ddp, run.opt, micro, n_sup, dist.world, args.grad_clip, run.autocast)
    if not (math.isfinite(loss) and math.isfinite(norm)):
        raise SystemExit(f"non-finite loss ({loss}) or gradient ({norm}) at step {step}: stopping before the "
                         f"update; the last checkpoint in {args.out} is untouched (try a lower --lr)")
    dt = time.time() - t0
    real = sum(len(ids) for ids, _ in rows)
    sft_sup = sum(sum(s[1:]) for _, s in sft)
    totals["sup_tokens"] += sft_sup  # the SFT data's own; replay is counted apart
    totals["replay_sup_tokens"] += n_sup - sft_sup
    totals["tokens"] += real
    padded = torch.tensor(float(sum(b.ids.numel() for b in micro if b.sup.any())), device=run.device)
    padded = all_reduce_sum(padded, dist)
    totals["pad_tokens"] += int(padded.item()) - real  # every rank's padded rows, less the real tokens
    totals["seconds"] += dt
    return dict(step=step, loss=round(loss, 4), lr=run.opt.param_groups[0]["lr"], grad_norm=round(norm, 3),
                sup_tokens=n_sup, tokens_per_s=round(real / dt), pad_share=round(pad_share(totals), 3))


def pad_share(totals: dict) -> float:
    return totals["pad_tokens"] / max(totals["pad_tokens"] + totals["tokens"], 1)


def summary(args, totals: dict, n_examples: int, loss: float, device) -> dict:
    sft_rows = args.batch - round(args.replay * args.batch)
    out = dict(summary=True, format=args.format, out=args.out, steps=args.steps, examples=n_examples,
               sup_tokens=totals["sup_tokens"], sup_tokens_per_example=round(
                   totals["sup_tokens"] / (args.steps * sft_rows), 1),
               replay=args.replay, replay_sup_tokens=totals["replay_sup_tokens"],
               pad_share=round(pad_share(totals), 3), train_seconds=round(totals["seconds"], 1),
               tokens_per_s=round(totals["tokens"] / max(totals["seconds"], 1e-9)), final_loss=loss)
    return dict(out, **peak_memory(device))


def set_up(args, dist: Dist, device, state: dict | None) -> Run | None:
    """Load the model (from --model, or the checkpoint on --resume), the data and the optimiser; None
    after --show-mask has printed its example."""
    if state:
        args.model = args.out
    tok = check_checkpoint(args.model, "--out" if state else "--model", f", e.g. the shipped {DEFAULT_BASE}, one "
                           f"written by base.py or one downloaded from the Hugging Face hub")
    seed_everything(args.seed)
    model = load_model(args.model, device=device, dtype=torch.float32)
    examples = training_examples(args, tok, model.config.max_position_embeddings, dist.world)
    if args.eval_n and args.data in RECIPES:  # the quick check's problems must fit, found now and not after training
        prompts_that_fit(tok, make_split("test", args.eval_n, args.seed), args.eval_max_new,
                         model.config.max_position_embeddings, "quick-check problems (prompt + --eval-max-new)")
    if args.show_mask:
        print(show_mask(tok, *examples[0]))
        return None
    autocast = autocast_for(args, device)
    set_up_shard(args, model, device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)
    totals = dict(sup_tokens=0, replay_sup_tokens=0, tokens=0, pad_tokens=0, seconds=0.0)
    if state:
        _, totals = restore_train_state(state, opt, model, args.out)
    ddp = model
    if dist.world > 1 and not args.shard:
        ddp = torch.nn.parallel.DistributedDataParallel(model,
                                                        device_ids=[device.index] if device.type == "cuda" else None)
    if dist.main:
        print(f"{args.format} SFT: {len(examples):,} examples from {args.data}, {args.steps} steps x {args.batch} "
              f"({round(args.replay * args.batch)} of them replay), {model.num_params() / 1e6:.2f}M parameters, "
              f"{device}, {dist.world} rank(s)")
    log_path = start_log(args, state, dist, dict(data=fingerprint(examples)))
    return Run(args, dist, device, tok, model, opt, autocast, totals, log_path, ddp=ddp, examples=examples,
               lengths=tuple(len(ids) for ids, _ in examples))


@training.one_voice
def main(argv=None):
    args, dist, device, state = begin_run(parse_args(argv), "sft_comt.py")
    run = set_up(args, dist, device, state)
    if run is None:
        return
    args = run.args

    def checkpoint(step):
        save_run(args.out, run.model, run.tok, run.opt, step, run.totals, args, dist)

    stop = StopRequest()
    run.model.train()
    start = state["step"] if state else 0
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc=f"sft {args.format}",
               disable=not dist.main)
    row = dict(loss=float("nan"))
    for step in bar:
        row = sft_step(run, step)
        bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:,}")
        done = step + 1
        if dist.main and (step % args.log_every == 0 or done == args.steps):
            log_json(row, run.log_path)
        save_or_stop(done, args, stop, dist, device, checkpoint)
    bar.close()
    finish(run, row["loss"])
    close_distributed(dist)


def finish(run: Run, loss: float):
    """The summary line, with the quick check on `test` (synthetic data; rank 0 decodes, from the
    gathered weights under --shard)."""
    args, model = run.args, run.model
    evaluate = args.eval_n and args.data in RECIPES
    if evaluate and args.shard:
        model = gathered_copy(model, run.dist.main, run.device)
    if not run.dist.main:
        return
    out = summary(args, run.totals, len(run.examples), loss, run.device)
    if evaluate:
        model.eval()
        res = quick_eval(model, run.tok, args)
        print("example (test problem, greedy):\n" + visible(res.pop("example").strip()))
        out.update({k: round(v, 3) for k, v in res.items()})
    log_json(out, run.log_path)


if __name__ == "__main__":
    main()
