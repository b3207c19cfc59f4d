"""
The embedded default's base model: a tokenizer and a small Llama pretrained on a synthetic corpus,
standing in for a real pretrained LM that knows the language and arithmetic of the world, carries
out a worked solution and writes plans in its own words, but has never seen the post-training
template.

    python base.py --out runs/base0      # phase 1 from scratch (~1 h 50 min on 2 CPU cores)
    python base.py --init runs/base0 --out models/base --steps 3000 --lr 1e-3 --warmup 100 \
        --worked 0.35 --plans 0.4 --story 0.05   # phase 2: the shipped base (~1 h; build.json has both)
    python base.py --out runs/base2 --steps 400 --seed 1

Two phases, as real LMs are pretrained and then trained on for longer on a mix richer in the
documents a skill needs. Phase 1 builds the tokenizer and the model from scratch on the corpus
with its ramp (the world arriving over the build). Phase 2 (--init DIR) continues that model with a
fresh optimiser on the corpus at the end of its ramp, now with plan documents (--plans). The
shipped models/base is phase 2; its build.json records its command and, under "init", phase 1's.

Tokenizer: byte-level BPE (`tokenizers`) trained on a sample of the corpus, with every digit its
own token, as the Llama 3 and Qwen tokenizers do, so numbers are read and written digit by digit.
Special tokens: <|endoftext|> (end of a document; the stop token) and <|pad|>. Saved with the model,
so `transformers.AutoTokenizer.from_pretrained("models/base")` opens it.

The rule: the base knows the whole world, in its own words; post-training sees only the train
recipe, in the project's template. Like a pretrained LM that has read text of every kind, the base
is taught, as general skills, the language of every frame and phrasing (the OOD ones included),
arithmetic over every split's number range, executing a handed plan of up to seven steps, reading
past an irrelevant sentence, and writing a plan for a problem of any kind in its own forms
(comt/corpus.py: "Steps:" lists and "Reasoning:" sentences, never the "Plan:" template). It is never
shown a question of any split, nor a plan in the post-training template as a target. Stages 1 and
2 then train on the train recipe alone, so every OOD split is out of distribution for
post-training (as GSM-Hard or SVAMP are for a model post-trained on GSM8K) while within reach of
the base, and a results table asks how much of what the base can do each arm keeps.

Corpus: comt/corpus.py (worked problems with their plan in the prompt, plan documents, story text,
arithmetic lines).

Model: the Llama architecture of comt/model.py (tied embeddings, GQA), AdamW with warm-up and cosine
decay, next-token loss on the supervised tokens. The ten digit tokens start with a Fourier code of
their value (cos, sin of 2 pi f d / 10, f = 1..5) in their first ten embedding dimensions: a
stand-in for a real model's number sense that makes the units digit of a sum quick to learn.

Every --eval-every steps it logs greedy figures on --eval-n held-out items each (on the way test
and ood_steps, at the end test and every OOD split):
  arithmetic      single lines `name = x op y =` in the train ranges and in the wide ones
  from_plan       accuracy, the split's problems prompted with the question, the gold plan and
                  "Solution:" (the ceiling of what execution allows)
  own_plan        plan_correct, the problems prompted in the base's own "Steps:" form
                  (evaluate.py --own-plan steps): the planning ceiling
  question_only   accuracy, the problems prompted with the question alone as post-training prompts
                  them (the floor: the base plans only in its own form, so it rarely answers here)
The directory gets config.json, model.safetensors, the tokenizer and build.json (the command, the
arguments, the final figures and, with --init, the build.json of the base it continued).
"""
import argparse
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from comt.checkpoint import restore_train_state, save_checkpoint, train_state
from comt.common import check_checkpoint, load_model, log_json, pad_id, seed_everything, write_json
from comt.corpus import Corpus, arithmetic_line, corpus_docs, encode_doc, quantity_names, split_questions
from comt.engine import Engine, complete
from comt.evaluation import greedy_judgements, own_plan_judgements
from comt.flags import COUNT, NONNEG, NONNEG_INT, POSITIVE, SEED, SHARE
from comt.lifecycle import STATE_FILE, STOPPED, StopRequest, claim_and_log, given_flags, resume_run, save_or_stop
from comt.model import ModelConfig, Transformer
from comt.parallel import Dist
from comt.tasks import OOD_SPLITS, make_split
from comt.training import cosine_lr

EOS, PAD = "<|endoftext|>", "<|pad|>"
SCRIPT = "base.py"
DEFAULT_OUT = "models/base"
PLANNED_NEW_TOKENS, PLAIN_NEW_TOKENS = 192, 320  # a 7-step execution of large numbers; a plan and its execution
OWN_PLAN_NEW_TOKENS = 192  # a 7-step plan in the base's own form

# -----------------------------------------------------------------------------
# Tokenizer and batches


def train_tokenizer(docs: list[str], vocab_size: int):
    """Byte-level BPE with single-digit tokens -> transformers PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(docs, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)



class Batches:
    """The batch of every step, a pure function of (seed, step) so that a resumed build sees the
    same data: documents are drawn `window` batches at a time from a generator seeded by the
    window's index, sorted by length (rows of a batch have similar lengths; one document per row,
    right-padded) and the window's batches shuffled."""

    def __init__(self, corpus: Corpus, tok, seed: int, batch: int, max_len: int, steps: int, window: int = 16,
                 ramp: bool = True):
        self.corpus, self.tok, self.seed, self.batch, self.max_len, self.window = corpus, tok, seed, batch, max_len, window
        self.steps, self.ramp = steps, ramp
        self.cached = (None, [])

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (B,T), sup (B,T) bool: the token is supervised)."""
        w = step // self.window
        if self.cached[0] != w:
            rng = random.Random(f"corpus-{self.seed}-{w}")
            self.corpus.progress = w * self.window / max(self.steps - 1, 1) if self.ramp else 1.0
            docs = [encode_doc(self.tok, *self.corpus.doc(rng)) for _ in range(self.batch * self.window)]
            docs = sorted(((i[:self.max_len], s[:self.max_len]) for i, s in docs), key=lambda d: len(d[0]))
            chunks = [docs[k:k + self.batch] for k in range(0, len(docs), self.batch)]
            rng.shuffle(chunks)
            self.cached = (w, chunks)
        rows = self.cached[1][step % self.window]
        T = max(len(i) for i, _ in rows)
        ids = torch.full((len(rows), T), self.tok.pad_token_id, dtype=torch.long)
        sup = torch.zeros((len(rows), T), dtype=torch.bool)
        for r, (i, s) in enumerate(rows):
            ids[r, :len(i)] = torch.tensor(i)
            sup[r, :len(s)] = torch.tensor(s)
        return ids, sup


def init_digit_embeddings(model, tok, scale: float = 0.1):
    """Give each digit token d a Fourier code of its value in the first ten embedding dimensions:
    scale * (cos, sin)(2 pi f d / 10) for f = 1..5 (the rest stays random). The units digit of a
    sum is addition modulo 10, which is a rotation in this code."""
    emb = model.model.embed_tokens.weight
    f = torch.arange(1, 6, dtype=torch.float)
    with torch.no_grad():
        for d in range(10):
            angle = 2 * math.pi * f * d / 10
            code = torch.stack([angle.cos(), angle.sin()], dim=1).flatten()  # (10,): cos1, sin1, cos2, ...
            emb[tok.convert_tokens_to_ids(str(d)), :10] = scale * code
    return model


# -----------------------------------------------------------------------------
# Evaluation


EVAL_SPLITS = ("test",) + OOD_SPLITS  # the splits whose results tables the base is a row of


def arithmetic_accuracy(engine, tok, n: int, wide: bool, seed: int = 0) -> float:
    """Greedy accuracy on n held-out named lines `name = x op y =` of the train or the wide ranges."""
    rng = random.Random(f"heldout-{seed}-{'wide' if wide else 'train'}")
    names = quantity_names()
    lines = [arithmetic_line(rng, rng.choice(names), wide) for _ in range(n)]
    outs = complete(engine, tok, [tok(q)["input_ids"] for q, _ in lines], 6)
    return sum(o.strip().split("\n")[0].strip() == a.strip() for o, (_, a) in zip(outs, lines)) / n


def evaluate_base(model, tok, n: int, splits=EVAL_SPLITS, seed: int = 0) -> dict:
    """Greedy figures on n held-out items each (see the header): arithmetic lines of the train and
    the wide ranges; each of `splits` from the gold plan and from the question alone (accuracy, by
    evaluate.greedy_judgements, as evaluate.py --gold-plan and evaluate.py answer them) and the base's
    own plans (plan_correct, by evaluate.own_plan_judgements, as evaluate.py --own-plan judges them)."""
    engine = Engine(model, pad_id=pad_id(tok))
    out = dict(arithmetic={r: arithmetic_accuracy(engine, tok, n, r == "wide", seed) for r in ("train", "wide")},
               from_plan={}, own_plan=dict(plan_correct={}), question_only={})
    for split in splits:
        problems = make_split(split, n, seed)
        for key, gold_plan, new in (("from_plan", True, PLANNED_NEW_TOKENS), ("question_only", False, PLAIN_NEW_TOKENS)):
            judged = greedy_judgements(engine, tok, problems, new, gold_plan)
            out[key][split] = sum(j.correct for j in judged) / len(judged)
        right = [r["plan_correct"] for r in own_plan_judgements(engine, tok, problems, OWN_PLAN_NEW_TOKENS)]
        out["own_plan"]["plan_correct"][split] = sum(right) / len(right)
    return out


# -----------------------------------------------------------------------------
# Training


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="Build the tokenizer and pretrain the default base model.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="output Hugging Face directory")
    ap.add_argument("--seed", type=SEED, default=0, help="seed for corpus, weights and data order")
    ap.add_argument("--init", default=None, help="continue pretraining this base (its tokenizer and weights, a fresh "
                    "optimiser, the corpus at the end of its ramp) instead of building one from scratch")
    # corpus and tokenizer
    ap.add_argument("--worked", type=SHARE, default=0.5, help="share of worked fresh-frame problems")
    ap.add_argument("--plans", type=SHARE, default=0.0, help="share of plan documents (a question and its plan in "
                    "the base's own form; the shipped base's second phase, with --init, has 0.4)")
    ap.add_argument("--story", type=SHARE, default=0.1, help="share of story documents (the rest: arithmetic)")
    ap.add_argument("--vocab", type=COUNT, default=1024, help="BPE vocabulary size")
    ap.add_argument("--tokenizer-docs", type=COUNT, default=20_000, help="documents the tokenizer is trained on")
    # model
    ap.add_argument("--dim", type=COUNT, default=256, help="hidden size")
    ap.add_argument("--layers", type=COUNT, default=4, help="transformer blocks")
    ap.add_argument("--heads", type=COUNT, default=8, help="attention heads")
    ap.add_argument("--kv-heads", type=COUNT, default=4, help="key/value heads")
    # optimisation
    ap.add_argument("--steps", type=COUNT, default=6500, help="optimizer steps")
    ap.add_argument("--batch", type=COUNT, default=16, help="documents per step")
    ap.add_argument("--max-len", type=COUNT, default=768, help="longest document in tokens (longer ones are cut)")
    ap.add_argument("--lr", type=POSITIVE, default=2e-3, help="peak learning rate")
    ap.add_argument("--warmup", type=NONNEG_INT, default=200, help="warm-up steps")
    ap.add_argument("--weight-decay", type=NONNEG, default=0.1, help="AdamW weight decay")
    ap.add_argument("--eval-every", type=NONNEG_INT, default=1000, help="steps between evaluations (0: only at the end)")
    ap.add_argument("--eval-n", type=COUNT, default=200, help="items per accuracy")
    ap.add_argument("--log-every", type=COUNT, default=100, help="steps between JSON log lines")
    ap.add_argument("--save-every", type=COUNT, default=500, help="steps between checkpoints")
    ap.add_argument("--resume", action="store_true", help="continue the build in --out from its checkpoint, "
                    "with the arguments saved there (other values are refused, except --steps and the runtime flags)")
    ap.add_argument("--stop-at", type=COUNT, default=None, help=f"save and stop after this step (exit status "
                    f"{STOPPED}; --resume continues)")
    ap.set_defaults(device="cpu")  # trains in float32 on the CPU
    return ap


def parse_args(argv=None):
    ap = parser()
    args = ap.parse_args(argv)
    if args.worked + args.plans + args.story > 1:
        ap.error(f"--worked {args.worked}, --plans {args.plans} and --story {args.story} are shares of the corpus: "
                 f"together at most 1")
    if args.init and os.path.abspath(args.init) == os.path.abspath(args.out):
        ap.error(f"--init {args.init} is --out: write the continued base to another directory")
    if args.dim % args.heads or args.heads % args.kv_heads:
        ap.error(f"--dim {args.dim} must be a multiple of --heads {args.heads}, and that of --kv-heads {args.kv_heads}")
    return args


def build_model(args, tok) -> Transformer:
    cfg = ModelConfig(model_type="llama", vocab_size=len(tok), hidden_size=args.dim,
                      intermediate_size=int(args.dim * 8 / 3) // 32 * 32, num_hidden_layers=args.layers,
                      num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, max_position_embeddings=1024,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return init_digit_embeddings(Transformer(cfg).init_weights(), tok)


def main(argv=None):
    args, state = parse_args(argv), None
    if args.resume:
        args, state = resume_run(args, Dist(), SCRIPT, given_flags(parser(), argv))
        print(f"resuming {args.out} at step {state['step']} (arguments from its checkpoint)", flush=True)
    seed_everything(args.seed)
    corpus = Corpus(args.worked, args.story, split_questions(), plans=args.plans)
    if state or args.init:
        tok = check_checkpoint(args.out if state else args.init, "--out" if state else "--init")
        model = load_model(args.out if state else args.init)
    else:
        tok = train_tokenizer(["".join(d) for d in corpus_docs(args.tokenizer_docs, args.seed, args.worked, args.story)],
                              args.vocab)
        model = build_model(args, tok)
    print(f"model: {model.num_params() / 1e6:.2f}M parameters, vocabulary {len(tok)}", flush=True)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=args.weight_decay), dict(params=rest, weight_decay=0.0)],
                            lr=args.lr, betas=(0.9, 0.95))
    command = "python base.py" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    start, totals = 0, dict(tokens=0, sup_tokens=0, seconds=0.0, metrics={}, command=command, init=init_build(args))
    if state:
        start, totals = restore_train_state(state, opt)
    log_path = claim_and_log(args, SCRIPT, state, Dist(), checks={})
    batch_at = Batches(corpus, tok, args.seed, args.batch, args.max_len, args.steps, ramp=not args.init)

    def checkpoint(step):
        save_checkpoint(args.out, model, tok, train_state(step, opt, totals, args, SCRIPT, checks={}))

    stop = StopRequest()
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="pretrain")
    row = dict(loss=float("nan"))
    for step in bar:
        row = pretrain_step(model, opt, batch_at(step), step, args, totals)
        bar.set_postfix(loss=f"{row['loss']:.3f}")
        done = step + 1
        if step % args.log_every == 0 or done == args.steps:
            log_json(row, log_path)
        if (args.eval_every and done % args.eval_every == 0) or done == args.steps:
            model.eval()  # on the way test and the longest chains (every split costs minutes); at the end every split
            totals["metrics"] = evaluate_base(model, tok, args.eval_n,
                                              EVAL_SPLITS if done == args.steps else ("test", "ood_steps"))
            log_json(dict(eval=True, step=done, **totals["metrics"]), log_path)
        save_or_stop(done, args, stop, Dist(), torch.device("cpu"), checkpoint, SCRIPT)
    bar.close()
    finish_build(args, model, tok, totals, row["loss"], log_path)


def pretrain_step(model, opt, batch: tuple, step: int, args, totals: dict) -> dict:
    """One AdamW step on the mean cross-entropy of the batch's supervised tokens; its log line."""
    t1 = time.time()
    model.train()
    ids, sup = batch
    for g in opt.param_groups:
        g["lr"] = cosine_lr(step, args.steps, args.lr, args.warmup)
    target = sup[:, 1:]  # (B,T-1): position t predicts token t+1
    logits = model(ids[:, :-1], logits_mask=target)  # (N,V)
    loss = F.cross_entropy(logits, ids[:, 1:][target])
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    if not (torch.isfinite(loss) and torch.isfinite(norm)):
        raise SystemExit(f"non-finite loss or gradient at step {step}: stopping before the update; the last "
                         f"checkpoint in {args.out} is untouched (try a lower --lr)")
    opt.step()
    opt.zero_grad(set_to_none=True)
    totals["tokens"] += ids.numel()
    totals["sup_tokens"] += int(target.sum())
    totals["seconds"] += time.time() - t1
    return dict(step=step, loss=round(loss.item(), 4), grad_norm=round(norm.item(), 3), lr=opt.param_groups[0]["lr"],
                tokens=totals["tokens"], seconds=round(totals["seconds"], 1))


def init_build(args) -> dict | None:
    """With --init: the build.json of the base it continues (its command, arguments and figures), so the
    continued base records every command that made it."""
    if not args.init:
        return None
    try:
        with open(os.path.join(args.init, "build.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return dict(path=args.init, note="no readable build.json")


def finish_build(args, model, tok, totals: dict, loss: float, log_path: str):
    """build.json with the command, its arguments and the figures; the optimiser state removed."""
    settings = {k: v for k, v in vars(args).items() if k not in ("resume", "stop_at", "device")}
    summary = dict(summary=True, command=totals["command"], args=settings, params=model.num_params(), vocab=len(tok),
                   tokens_trained=totals["tokens"], supervised_tokens=totals["sup_tokens"],
                   train_seconds=round(totals["seconds"], 1), final_loss=loss, **totals["metrics"],
                   init=totals.get("init"))
    write_json(summary, os.path.join(args.out, "build.json"), indent=2)
    os.remove(os.path.join(args.out, STATE_FILE))  # a finished build ships without optimizer state
    log_json(summary, log_path)


if __name__ == "__main__":
    main()
