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
                   execution. Nothing after the marker and no stop token: no execution of a training
                   problem is ever supervised; the model goes on from the marker with what its base
                   already knows.
      cot          the complete trajectory: the same plan and marker, then "<solution>\\nAnswer: N"
                   and the stop token. The two arms differ only in whether execution is supervised.
    Replay (--replay, a share of every global batch, the same for both arms): documents of the base
    model's own pretraining corpus (comt/corpus.py: worked problems in fresh frames with their plan in
    the prompt, loss on their execution), drawn fresh for each step. They stand in for a large
    pretrained model's resistance to forgetting what the SFT data never shows; without them, training
    on plans alone teaches "after a line comes another plan line" and erases the base's execution
    (measured in docs/notes.md: test accuracy falls from 82% to a few percent, plans still written).
    Budget: stage 1's job is to teach the template; chosen on val from the shipped base (seed 0, 200
    problems, then CCRL at its defaults): 100 steps write the plan on 100% of val and answer 80.0%
    (95.5% after CCRL), 200 steps 90.5% (94.0%), 400 steps 91.5% (95.0%).
    Loss = mean token cross-entropy over all supervised tokens of the global batch: each micro-batch
    adds sum(CE) / (supervised tokens in the global batch), so gradient accumulation and the split
    across ranks do not change the result (comt/training.py: update). AdamW, linear warm-up, cosine
    decay to 10% of the peak, gradient clipping. Every epoch is shuffled with the seed and cut into
    global batches of similar lengths (the pad share is logged). A model with a chat template gets
    the question as the user turn and the target as the assistant turn.

Checks and counts: at the end (and every --eval-every steps) --eval-n problems of --eval-split are
answered greedily, each an eval line with the tokens trained so far (every step counts them exactly,
replay included). Run directory, checkpoints, --resume and ranks: comt/lifecycle.py.

Deviations from the paper: the paper fine-tunes 4-8B models on teacher-written (LLaMA-3.1-70B)
meta-thoughts for GSM8K/SVAMP; the default uses the exact plans of the synthetic world's programs
and base.py's small model (models/base), with budgets sized for a laptop CPU. Replay is ours (see
above): a 4-8B model keeps its execution skill through a short SFT on plans, a 3M-parameter one
does not. The paper's text format and hyperparameters are not
public; ours are documented in comt/tasks.py and --help.
"""
import argparse
import functools
import random
from dataclasses import dataclass, field

import torch

from comt import lifecycle, training
from comt.benchmarks import problems_for_cli, with_targets
from comt.common import check_checkpoint, checkpoint_id, load_model, log_json, pad_id, pick_device, seed_everything
from comt.corpus import encode_doc, taboo_words, worked_doc
from comt.engine import Engine
from comt.evaluation import Checks, greedy_judgements, greedy_summary
from comt.flags import COUNT, NONNEG, SEED, add_flags, flag, from_flags, number
from comt.lifecycle import add_run_args, begin_run, fingerprint, given_flags
from comt.parallel import gathered_copy, one_voice, peak_memory
from comt.show import visible
from comt.tasks import RECIPES, encode_example, fitting, make_split, prompts_that_fit
from comt.training import Laps, add_time, contention, cost_so_far, token_batches

SCRIPT = "sft_comt.py"
DEFAULT_BASE = "models/base"


# -----------------------------------------------------------------------------
# Data: the training examples, and the global batch of each step (a pure function of the step)


@dataclass(frozen=True)
class Batching:
    """How each step's global batch is made (its flags)."""
    batch: int = flag(8, "global batch (examples per step, over all ranks)", type=COUNT)
    micro_batch: int = flag(8, "examples per forward/backward on one rank", type=COUNT)
    replay: float = flag(None, "share of every batch given to documents of the base's pretraining corpus "
                         "(default 0.25 on synthetic data, 0 otherwise)", type=number(lo=0, below=1))


def training_examples(args, tok, context: int, world: int) -> list[tuple[list[int], list[bool]]]:
    """The encoded training examples [(ids, supervised)] (plans and solutions from --targets where
    given), those longer than the context skipped."""
    problems = with_targets(problems_for_cli(args.data, args.n_train, args.limit, args.seed), args.targets, args.data)
    texts = ("plan",) if args.format == "comt" else ("plan", "solution")
    missing = [p.id for p in problems if not all(getattr(p, t) for t in texts)]
    if missing:
        raise SystemExit(f"--format {args.format} needs {' and '.join(texts)} for every problem; {len(missing)} of "
                         f"{len(problems)} from {args.data} have none (first: {missing[0]}). Write them with "
                         f"teacher.py and pass --targets PATH (JSONL rows of id, plan, solution).")
    examples = [encode_example(tok, p, args.format) for p in problems]
    examples = fitting(examples, [len(ids) for ids, _ in examples], context, "training examples")
    if len(examples) < args.batch - round(args.replay * args.batch):
        raise SystemExit(f"--batch {args.batch} is larger than the {len(examples)} training examples")
    if args.batch % world:
        raise SystemExit(f"--batch {args.batch} must be divisible by the {world} ranks")
    return examples


@dataclass
class SFTBatch:
    ids: torch.Tensor  # (B,T) right-padded with the pad id
    mask: torch.Tensor  # (B,T) bool: token is supervised (predicted from the tokens before it)

    def to(self, device) -> "SFTBatch":
        return SFTBatch(self.ids.to(device), self.mask.to(device))


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
    """n documents of the kind the base was pretrained on, for step `step` (a pure function of it):
    worked problems in fresh frames, plan in the prompt, supervised from "Solution:" on
    (corpus.worked_doc), of the train recipe only (no OOD frame's noun): stage 1 sees no OOD split."""
    rng, taboo = random.Random(f"replay-{seed}-{step}"), taboo_words(ood_nouns=True)
    return [encode_doc(tok, *worked_doc(rng, taboo, world=False)) for _ in range(n)]


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
    """The SFT run: the common record (training.Run), its batching and its data; totals: token
    counts and seconds."""
    batching: Batching
    examples: list = field(default_factory=list)  # [(ids, supervised)]
    lengths: tuple = ()  # their token lengths (the batching reads them)


@dataclass
class StepFacts:
    """What one SFT step trained on and what came of it (the loop keeps the books)."""
    loss: float  # mean token cross-entropy over the global batch's supervised tokens
    grad_norm: float  # before clipping
    sup_tokens: int  # supervised tokens of the global batch (all ranks, replay included)
    sft_sup_tokens: int  # of them, the SFT data's own
    tokens: int  # real tokens of the global batch
    padded: int  # cells of this rank's micro-batches that supervise something, padding included


def token_mean_loss(n_sup: int):
    """The loss of one micro-batch, given its supervised tokens' log-probs: the sum of their
    cross-entropies over the global batch's count n_sup (so the micro-batches add up to the mean)."""
    def loss(batch, logp, ref_logp):
        summed = -logp.sum()
        return summed / n_sup, dict(loss_sum=summed.detach())
    return loss


def sft_step(run: Run, step: int) -> StepFacts:
    """One optimiser step on the step's global batch, this rank's share of it (Dist.share): the sum
    of the supervised tokens' cross-entropies over the whole batch's count (training.update)."""
    b, pad = run.batching, pad_id(run.tok)
    sft, replay = global_batch(step, run.examples, run.lengths, b.batch, b.replay, run.seed, run.tok)
    rows = sft + replay
    n_sup = sum(sum(s[1:]) for _, s in rows)
    mine = run.dist.share(rows)
    micro = [SFTBatch(ids, mask).to(run.device)
             for _, ids, mask in token_batches([ids for ids, _ in mine], [s for _, s in mine], b.micro_batch, pad)]
    empty = SFTBatch(torch.full((1, 2), pad), torch.zeros(1, 2, dtype=torch.bool)).to(run.device)
    stats, norm = training.update(run, micro, token_mean_loss(n_sup), step, empty)
    total = run.dist.sum(stats.get("loss_sum", torch.zeros((), device=run.device))).item() / n_sup
    return StepFacts(total, norm, n_sup, sum(sum(s[1:]) for _, s in sft), sum(len(ids) for ids, _ in rows),
                     sum(m.ids.numel() for m in micro if m.mask.any()))


# -----------------------------------------------------------------------------
# Evaluation and logging: the books of the run, the quick check, the summary


def record(run: Run, step: int, facts: StepFacts, laps: Laps) -> dict:
    """Add a step to the run's totals (every rank calls it: the padding is summed over ranks); its log
    line, with the step's exact token counts: trained (forward and backward, replay included) and
    supervised (replay included; the totals count the SFT data's own and the replay's apart)."""
    totals, seconds = run.totals, laps.total()
    totals["sup_tokens"] += facts.sft_sup_tokens  # the SFT data's own; replay is counted apart
    totals["replay_sup_tokens"] += facts.sup_tokens - facts.sft_sup_tokens
    totals["train_tokens"] += facts.tokens
    padded = run.dist.sum(torch.tensor(float(facts.padded), device=run.device))
    totals["pad_tokens"] += int(padded.item()) - facts.tokens  # every rank's padded rows, less the real tokens
    add_time(totals, seconds, laps.waited())
    return dict(step=step, loss=round(facts.loss, 4), lr=run.opt.param_groups[0]["lr"],
                grad_norm=round(facts.grad_norm, 3), sup_tokens=facts.sup_tokens, train_tokens=facts.tokens,
                tokens_per_s=round(facts.tokens / seconds), pad_share=round(pad_share(totals), 3))


def pad_share(totals: dict) -> float:
    return totals["pad_tokens"] / max(totals["pad_tokens"] + totals["train_tokens"], 1)


def check(run: Run, step: int) -> dict | None:
    """The quick check at `step` (synthetic data, --eval-n > 0): greedy answers to --eval-n problems of
    --eval-split (as evaluate.py answers them), logged as an eval line with the run's cost so far;
    rank 0 decodes, from the gathered weights under --shard. The summary and the first completion on
    rank 0, None elsewhere or when off."""
    args, model = run.args, run.model
    if not (args.eval_n and args.data in RECIPES):
        return None
    if run.sharded:
        model = gathered_copy(model, run.dist.main, run.device)
    res = None
    if run.dist.main:
        model.eval()
        problems = prompts_that_fit(run.tok, make_split(args.eval_split, args.eval_n, run.seed), args.eval_max_new,
                                    model.config.max_position_embeddings, "quick-check problems")
        judged = greedy_judgements(Engine(model, pad_id=pad_id(run.tok)), run.tok, problems, args.eval_max_new,
                                   desc="quick check")
        res = dict(greedy_summary(judged), example=judged[0].text)
        log_json(dict(eval=True, step=step, split=args.eval_split, acc=round(res["acc"], 4),
                      plan_rate=round(res["plan_rate"], 4), **cost_so_far(run.totals)), run.log_path)
    run.model.train()
    return res


def summary(run: Run, loss: float) -> dict | None:
    """The last quick check, then the summary line (rank 0; None elsewhere)."""
    args, totals, res = run.args, run.totals, check(run, run.schedule.steps)
    if not run.dist.main:
        return None
    b = run.batching
    out = dict(summary=True, format=args.format, out=args.out, steps=run.schedule.steps, examples=len(run.examples),
               sup_tokens=totals["sup_tokens"], sup_tokens_per_example=round(
                   totals["sup_tokens"] / (run.schedule.steps * (b.batch - round(b.replay * b.batch))), 1),
               replay=b.replay, replay_sup_tokens=totals["replay_sup_tokens"], train_tokens=totals["train_tokens"],
               pad_share=round(pad_share(totals), 3), train_seconds=round(totals["seconds"], 1),
               tokens_per_s=round(totals["train_tokens"] / max(totals["seconds"], 1e-9)), final_loss=loss,
               **contention(totals["wait_seconds"], totals["seconds"]), **peak_memory(run.device))
    if res:
        print(f"example ({args.eval_split} problem, greedy):\n" + visible(res["example"].strip()))
        out.update({f"{args.eval_split}_acc": round(res["acc"], 3), "plan_rate": round(res["plan_rate"], 3)})
    return out


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
    ap.add_argument("--seed", type=SEED, default=0, help="seed for data order and evaluation problems")
    add_flags(ap, Batching, "batches")
    add_flags(ap, training.Schedule, "optimisation (the step count: enough to teach the template, chosen on val)",
              lr=5e-4, warmup=20)
    ap.add_argument("--weight-decay", type=NONNEG, default=0.0, help="AdamW weight decay")
    add_run_args(ap, save_every=100)
    ap.add_argument("--log-every", type=COUNT, default=20, help="steps between JSON log lines")
    add_flags(ap, Checks, "greedy checks (at the end too)", eval_every=0)
    ap.add_argument("--eval-max-new", type=COUNT, default=256, help="tokens generated per check problem")
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


def set_up(args, dist, device, state: dict | None) -> Run:
    """The run: model, tokenizer and data (load_start), then what both stages share (lifecycle.start)."""
    tok, model, examples = load_start(args, device, state, dist.world)
    if dist.main:
        print(f"{args.format} SFT: {len(examples):,} examples from {args.data}, {args.steps} steps x {args.batch} "
              f"({round(args.replay * args.batch)} of them replay), {model.num_params() / 1e6:.2f}M parameters, "
              f"{device}, {dist.world} rank(s)")
    checks = dict(data=fingerprint(examples), init=state["checks"].get("init") if state else checkpoint_id(args.model))
    totals = dict(sup_tokens=0, replay_sup_tokens=0, train_tokens=0, forward_tokens=0, pad_tokens=0, seconds=0.0,
                  wait_seconds=0.0)
    return lifecycle.start(Run, args, SCRIPT, dist, device, state, model=model, tok=tok, checks=checks, totals=totals,
                           weight_decay=args.weight_decay, batching=from_flags(Batching, args), examples=examples,
                           lengths=tuple(len(ids) for ids, _ in examples))


@one_voice
def main(argv=None):
    args = parse_args(argv)
    if args.show_mask:
        tok, _, examples = load_start(args, pick_device(args.device), None, world=1)
        return print(show_mask(tok, *examples[0]))
    run = set_up(*begin_run(args, SCRIPT, given_flags(parser(), argv)))
    args, row = run.args, dict(loss=float("nan"))  # (args: on --resume, the checkpoint's)
    run.model.train()
    for step in lifecycle.steps(run, f"sft {args.format}"):
        laps = Laps()
        row = record(run, step, sft_step(run, step), laps)
        if step % args.log_every == 0 or step + 1 == run.schedule.steps:
            lifecycle.log_row(run, row, loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:,}")
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < run.schedule.steps:
            check(run, step + 1)
        lifecycle.checkpoint_or_stop(run, step + 1)
    lifecycle.end(run, summary(run, row["loss"]))


if __name__ == "__main__":
    main()
