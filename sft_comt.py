"""
Stage 1: supervised fine-tuning on Chain-of-Meta-Thought targets (CoMT), or on whole worked
solutions (CoT-SFT, the paper's baseline) with --format cot.

    python sft_comt.py                                   # CoMT on the embedded default -> runs/sft_comt
    python sft_comt.py --format cot --out runs/sft_cot   # baseline: same data, optimiser and budget
    python sft_comt.py --show-mask                       # print one example, supervised tokens marked
    python sft_comt.py --resume                          # continue runs/sft_comt from its checkpoint
    torchrun --nproc_per_node 2 sft_comt.py              # data-parallel: gloo on CPU, nccl on GPU
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
    execution (the shipped base, default budget, seed 0: 82% of 200 test problems with --replay 0.25,
    4.5% without, both writing the plan on every problem).
    Budget: stage 1's job is to teach the template; chosen on val from the shipped base (seed 0, 200
    problems, then CCRL at its defaults): 100 steps write the plan on 100% of val and answer 80.0%
    (95.5% after CCRL), 200 steps 90.5% (94.0%), 400 steps 91.5% (95.0%).
    Loss = mean token cross-entropy over all supervised tokens of the global batch: each
    micro-batch adds sum(CE) / (supervised tokens in the global batch), so gradient accumulation
    and the split across ranks do not change the result. AdamW, linear warm-up, cosine decay to
    10% of the peak, gradient clipping. Batches: every epoch is shuffled with the seed and cut into
    global batches of similar lengths (length bucketing; the pad share is logged). A model with a
    chat template gets the question as the user turn and the target as the assistant turn.

Ranks: under torchrun each rank takes every N-th row of the global batch and the gradients are
summed over the ranks, so the step is the one of a single process (comt/training.py, "Ranks": the
same helpers in both stages). Each rank holds the whole model and optimiser, or under --shard
(FSDP2) 1/N of the weights, gradients and AdamW state, gathering each block's weights for its
forward and backward (bf16 compute over fp32 master weights on GPU).

Checks and counts: at the end (and every --eval-every steps) --eval-n problems of --eval-split
(`test`, or `val` to choose settings on) are answered greedily, each check an eval line with the
tokens trained so far. Every logged step counts its tokens exactly (trained: forward and backward,
replay included; supervised), the summary adds them up and says whether the run's threads waited
for a core (another job on the machine: its seconds then mean little).

Checkpoints: `--out` is a Hugging Face directory (config.json, model.safetensors, tokenizer) plus
train_state.pt (optimiser, step, RNG, arguments; under --shard the optimiser is saved per rank in
optimizer_shards/ and the full weights are gathered to rank 0), replaced every --save-every steps
and at the end in a way no kill can break (comt/lifecycle.py). Ctrl-C/SIGTERM saves before
exiting; a non-finite loss stops the run without touching the last checkpoint; --resume continues
it exactly (the data position is a function of the step).

Deviations from the paper: the paper fine-tunes 4-8B models on teacher-written (LLaMA-3.1-70B)
meta-thoughts for GSM8K/SVAMP; the default here uses the exact plans of the synthetic world's
programs and the small base model that base.py built (models/base), with budgets sized for a
laptop CPU. Replay is ours (see above): a 4-8B model keeps its execution skill through a short
SFT on plans, a 3M-parameter one does not. The paper's text format and hyperparameters are not
public; ours are documented in comt/tasks.py and --help.
"""
import argparse
import functools
import json
import math
import random
import sys
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from comt import training
from comt.common import (COUNT, NONNEG, NONNEG_INT, POSITIVE, SEED, check_checkpoint, checkpoint_id, load_model, log_json,
                         number, pad_id, pick_device, pick_dtype, seed_everything)
from comt.corpus import encode_doc, taboo_words, worked_doc
from comt.engine import Engine
from comt.evaluation import greedy_judgements
from comt.lifecycle import (StopRequest, add_run_args, begin_run, claim_and_log, fingerprint, given_flags,
                            restore_train_state, save_or_stop, save_run)
from comt.show import visible
from comt.tasks import (RECIPES, clean_solution, encode_example, fitting, make_split, problems_for_cli,
                        prompts_that_fit, text_lines)
from comt.training import (Dist, Laps, add_time, all_reduce_sum, autocast_for, backward, clip_grads, close_distributed,
                           contention, cosine_lr, cost_so_far, even_out, gathered_copy, length_groups, my_share,
                           pad_rows, peak_memory, refuse_bad_memory_flags, set_lr, shard_model, sum_grads,
                           target_logprobs)
from rewards import has_digit

SCRIPT = "sft_comt.py"
DEFAULT_BASE = "models/base"


# -----------------------------------------------------------------------------
# Data: the training examples, and the global batch of each step (a pure function of the step)


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
# One step: the loss over the global batch's supervised tokens, one optimiser step


@dataclass(kw_only=True)
class Run(training.Run):
    """The SFT run: the common record (training.Run) and its data; totals: token counts and seconds."""
    examples: list = field(default_factory=list)  # [(ids, supervised)]
    lengths: tuple = ()  # their token lengths (the batching reads them)


def micro_loss_sum(model, b: SFTBatch) -> torch.Tensor:
    """Sum of token cross-entropies over the supervised tokens of a micro-batch."""
    return -target_logprobs(model, b.ids, b.sup).sum()


def train_step(run: Run, micro: list[SFTBatch], n_sup: int, grad_clip: float) -> tuple[float, float]:
    """One optimiser step over this rank's micro-batches of the global batch, whose supervised
    tokens (all ranks) number n_sup. Returns (global mean token loss, gradient norm); a
    non-finite loss or gradient returns before the update."""
    loss_sum = torch.zeros((), device=micro[0].ids.device)
    for b in micro:
        with run.autocast:
            s = micro_loss_sum(run.model, b)
        backward(s / n_sup, run)
        loss_sum += s.detach()
    sum_grads(run)
    loss = all_reduce_sum(loss_sum, run.dist).item() / n_sup
    norm = clip_grads(run.model, grad_clip)
    if math.isfinite(loss) and math.isfinite(norm):
        run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    return loss, norm


@dataclass
class StepFacts:
    """What one SFT step trained on and what came of it (the loop keeps the books)."""
    loss: float  # mean token cross-entropy over the global batch's supervised tokens
    grad_norm: float  # before clipping
    sup_tokens: int  # supervised tokens of the global batch (all ranks, replay included)
    sft_sup_tokens: int  # of them, the SFT data's own
    tokens: int  # real tokens of the global batch
    padded: int  # cells of this rank's micro-batches that supervise something, padding included


def sft_step(run: Run, step: int) -> StepFacts:
    """One optimiser step on the step's global batch (this rank's share of it, training.my_share)."""
    args, pad = run.args, pad_id(run.tok)
    sft, replay = global_batch(step, run.examples, run.lengths, args.batch, args.replay, args.seed, run.tok)
    rows = sft + replay
    n_sup = sum(sum(s[1:]) for _, s in rows)
    mine = my_share(rows, run)
    micro = [collate([mine[i] for i in g], pad).to(run.device)
             for g in length_groups([len(ids) for ids, _ in mine], args.micro_batch)]
    micro = even_out(micro, collate([([pad] * 2, [False] * 2)], pad).to(run.device), run)  # (supervises nothing)
    set_lr(run.opt, cosine_lr(step, args.steps, args.lr, args.warmup))
    loss, norm = train_step(run, micro, n_sup, args.grad_clip)
    if not (math.isfinite(loss) and math.isfinite(norm)):
        raise SystemExit(f"non-finite loss ({loss}) or gradient ({norm}) at step {step}: stopping before the "
                         f"update; the last checkpoint in {args.out} is untouched (try a lower --lr)")
    return StepFacts(loss, norm, n_sup, sum(sum(s[1:]) for _, s in sft), sum(len(ids) for ids, _ in rows),
                     sum(b.ids.numel() for b in micro if b.sup.any()))


# -----------------------------------------------------------------------------
# Evaluation and logging: the books of the run, the quick check on test, the summary


def record(run: Run, step: int, facts: StepFacts, laps: Laps) -> dict:
    """Add a step to the run's totals (every rank calls it: the padding is summed over ranks); its log
    line, with the step's exact token counts: trained (forward and backward, replay included) and
    supervised (replay included; the totals count the SFT data's own and the replay's apart)."""
    totals, seconds = run.totals, laps.total()
    totals["sup_tokens"] += facts.sft_sup_tokens  # the SFT data's own; replay is counted apart
    totals["replay_sup_tokens"] += facts.sup_tokens - facts.sft_sup_tokens
    totals["train_tokens"] += facts.tokens
    padded = all_reduce_sum(torch.tensor(float(facts.padded), device=run.device), run.dist)
    totals["pad_tokens"] += int(padded.item()) - facts.tokens  # every rank's padded rows, less the real tokens
    add_time(totals, seconds, laps.waited())
    return dict(step=step, loss=round(facts.loss, 4), lr=run.opt.param_groups[0]["lr"],
                grad_norm=round(facts.grad_norm, 3), sup_tokens=facts.sup_tokens, train_tokens=facts.tokens,
                tokens_per_s=round(facts.tokens / seconds), pad_share=round(pad_share(totals), 3))


def pad_share(totals: dict) -> float:
    return totals["pad_tokens"] / max(totals["pad_tokens"] + totals["train_tokens"], 1)


def quick_eval(model, tok, split: str, n: int, max_new: int, seed: int) -> dict:
    """Greedy answers to n problems of `split` (comt.evaluation.greedy_judgements, as evaluate.py
    answers them): accuracy, the share that open with a digit-free plan, and the first completion."""
    problems = prompts_that_fit(tok, make_split(split, n, seed), max_new, model.config.max_position_embeddings,
                                "quick-check problems (prompt + --eval-max-new)")
    judged = greedy_judgements(Engine(model, pad_id=pad_id(tok)), tok, problems, max_new, desc="quick check")
    return dict(acc=sum(j.correct for j in judged) / len(judged),
                plan_rate=sum(j.plan for j in judged) / len(judged), example=judged[0].text)


def summary(args, totals: dict, n_examples: int, loss: float, device) -> dict:
    sft_rows = args.batch - round(args.replay * args.batch)
    out = dict(summary=True, format=args.format, out=args.out, steps=args.steps, examples=n_examples,
               sup_tokens=totals["sup_tokens"], sup_tokens_per_example=round(
                   totals["sup_tokens"] / (args.steps * sft_rows), 1),
               replay=args.replay, replay_sup_tokens=totals["replay_sup_tokens"], train_tokens=totals["train_tokens"],
               pad_share=round(pad_share(totals), 3), train_seconds=round(totals["seconds"], 1),
               tokens_per_s=round(totals["train_tokens"] / max(totals["seconds"], 1e-9)), final_loss=loss)
    return dict(out, **contention(totals["wait_seconds"], totals["seconds"]), **peak_memory(device))


def check(run: Run, step: int) -> dict | None:
    """The quick check at `step` (synthetic data, --eval-n > 0): greedy answers to --eval-n problems of
    --eval-split, logged as an eval line with the run's cost so far (tokens trained, seconds); rank 0
    decodes, from the gathered weights under --shard. Its result on rank 0, None elsewhere or when off."""
    args, model = run.args, run.model
    if not (args.eval_n and args.data in RECIPES):
        return None
    if run.sharded:
        model = gathered_copy(model, run.dist.main, run.device)
    res = None
    if run.dist.main:
        model.eval()
        res = quick_eval(model, run.tok, args.eval_split, args.eval_n, args.eval_max_new, args.seed)
        log_json(dict(eval=True, step=step, split=args.eval_split, acc=round(res["acc"], 4),
                      plan_rate=round(res["plan_rate"], 4), **cost_so_far(run.totals)), run.log_path)
    run.model.train()
    return res


def finish(run: Run, loss: float):
    """The last quick check, then the summary line."""
    args = run.args
    res = check(run, args.steps)
    if not run.dist.main:
        return
    out = summary(args, run.totals, len(run.examples), loss, run.device)
    if res:
        print(f"example ({args.eval_split} problem, greedy):\n" + visible(res.pop("example").strip()))
        out.update({f"{args.eval_split}_acc": round(res["acc"], 3), "plan_rate": round(res["plan_rate"], 3)})
    log_json(out, run.log_path)


# -----------------------------------------------------------------------------
# Set-up and main


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="Stage 1: CoMT supervised fine-tuning (or CoT-SFT with --format cot).",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--format", choices=("comt", "cot"), default="comt",
                    help="comt: supervise plan + 'Solution:' marker (CoMT); cot: plan, solution, answer and stop "
                    "(the CoT baseline)")
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
    ap.add_argument("--eval-n", type=NONNEG_INT, default=200, help="problems of --eval-split for the final check "
                    "(0: skip)")
    ap.add_argument("--eval-split", choices=("test", "val"), default="test", help="the split the checks answer "
                    "(val to choose settings on)")
    ap.add_argument("--eval-every", type=NONNEG_INT, default=0, help="also check every N steps (0: at the end "
                    "only); each check is a log line with the tokens trained so far")
    ap.add_argument("--eval-max-new", type=COUNT, default=256, help="tokens generated per test problem")
    return ap


def parse_args(argv=None):
    args = parser().parse_args(argv)
    args.out = args.out or ("runs/sft_comt" if args.format == "comt" else "runs/sft_cot")
    if args.replay is None:
        args.replay = 0.25 if args.data in RECIPES else 0.0
    return args


def load_start(args, device, state: dict | None, world: int) -> tuple:
    """(tokenizer, model, encoded training examples) of the run: from --model, or from the checkpoint on
    --resume; every input checked (the quick check's problems must fit too, found now and not after
    training)."""
    src = args.out if state else args.model
    tok = check_checkpoint(src, "--out" if state else "--model", f", e.g. the shipped {DEFAULT_BASE}, one written by "
                           f"base.py or one downloaded from the Hugging Face hub")
    seed_everything(args.seed)
    model = load_model(src, device=device, dtype=torch.float32)
    ctx = model.config.max_position_embeddings
    examples = training_examples(args, tok, ctx, world)
    if args.eval_n and args.data in RECIPES:
        prompts_that_fit(tok, make_split(args.eval_split, args.eval_n, args.seed), args.eval_max_new, ctx,
                         "quick-check problems (prompt + --eval-max-new)")
    return tok, model, examples


def set_up(args, dist: Dist, device, state: dict | None) -> Run:
    """The run: model, tokenizer and data (load_start), sharding as asked, the optimiser (restored on
    --resume) and the claimed run directory with its log."""
    tok, model, examples = load_start(args, device, state, dist.world)
    refuse_bad_memory_flags(args, device, SCRIPT)
    model.grad_checkpoint = args.grad_checkpoint
    if args.shard:
        shard_model(model, device, pick_dtype(args.dtype, device), args.offload)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)
    totals = dict(sup_tokens=0, replay_sup_tokens=0, train_tokens=0, forward_tokens=0, pad_tokens=0, seconds=0.0,
                  wait_seconds=0.0)
    if state:
        totals.update(restore_train_state(state, opt, model, args.out)[1])
    if dist.main:
        print(f"{args.format} SFT: {len(examples):,} examples from {args.data}, {args.steps} steps x {args.batch} "
              f"({round(args.replay * args.batch)} of them replay), {model.num_params() / 1e6:.2f}M parameters, "
              f"{device}, {dist.world} rank(s)")
    checks = dict(data=fingerprint(examples), init=state["checks"].get("init") if state else checkpoint_id(args.model))
    return Run(args=args, dist=dist, device=device, tok=tok, model=model, opt=opt, autocast=autocast_for(args, device),
               sharded=args.shard, totals=totals, log_path=claim_and_log(args, SCRIPT, state, dist, checks),
               script=SCRIPT, checks=checks, examples=examples, lengths=tuple(len(ids) for ids, _ in examples))


@training.one_voice
def main(argv=None):
    args = parse_args(argv)
    if args.show_mask:
        tok, _, examples = load_start(args, pick_device(args.device), None, world=1)
        print(show_mask(tok, *examples[0]))
        return
    args, dist, device, state = begin_run(args, SCRIPT, given_flags(parser(), argv))
    run = set_up(args, dist, device, state)
    start = state["step"] if state else 0
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc=f"sft {args.format}",
               disable=not dist.main)
    stop, row = StopRequest(), dict(loss=float("nan"))
    run.model.train()
    for step in bar:
        laps = Laps()
        row = record(run, step, sft_step(run, step), laps)
        bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:,}")
        done = step + 1
        if dist.main and (step % args.log_every == 0 or done == args.steps):
            log_json(row, run.log_path)
        if args.eval_every and done % args.eval_every == 0 and done < args.steps:
            check(run, done)
        save_or_stop(done, args, stop, dist, device, lambda step: save_run(run, step), SCRIPT)
    bar.close()
    finish(run, row["loss"])
    close_distributed(dist)


if __name__ == "__main__":
    main()
