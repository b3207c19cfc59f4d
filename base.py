"""
The embedded default's base model: a tokenizer and a small Llama pretrained on a synthetic corpus,
standing in for a real pretrained LM that knows the language and arithmetic of the world and can
carry out a worked solution, but was never taught to plan.

    python base.py                       # rebuilds models/base (the shipped checkpoint; ~57 min on 2 CPU cores)
    python base.py --out runs/base2 --steps 400 --seed 1

Tokenizer: byte-level BPE (`tokenizers`) trained on a sample of the corpus, with every digit its
own token, as the Llama 3 and Qwen tokenizers do, so numbers are read and written digit by digit.
Special tokens: <|endoftext|> (end of a document; the stop token) and <|pad|>. Saved with the model,
so `transformers.AutoTokenizer.from_pretrained("models/base")` opens it.

Corpus (drawn fresh for every step, one document per row; `corpus_docs` and the tests hold it to this):
  (a) worked problems, --worked share: "Question: ...\\n", half the time "Plan:\\n<plan>\\n", then
      "Solution:\\n<execution>\\nAnswer: N" and the end token, with the loss on "Solution:" and
      everything after it only, so the model learns to read a plan and execute it, never to write
      one. Their frames are fresh: the people, the item, the container and the companions are drawn
      anew for every problem, each a made-up word (40%) or a common word from a pool (60%; the
      train frames' nouns are among them, their people and every OOD word are not), so no noun
      or number can be recalled and every one must be read from the question (and the plan).
      Events and phrasings are the train ones, with 1-5 steps and the train number ranges.
  (b) story text, --story share: the questions alone of two to four fresh problems of the train
      recipe (train or fresh frames), full loss: the language of the world.
  (c) arithmetic, the rest: twelve lines `x op y = z` (a third of them `name = x op y = z`) with
      +, -, *, exact / in the train ranges (values <= 99, added or removed numbers and factors
      <= 9), full loss.
  Never in the corpus: a question of any split (the fresh frames' people are never a split's, and
  train-frame questions at the splits' standard sizes or in the test hash bucket are skipped), an
  OOD frame or phrasing, more than five steps, a number beyond the train ranges, a plan as a target.

Model: the Llama architecture of model.py (tied embeddings, GQA), AdamW with warm-up and cosine
decay, next-token loss on the supervised tokens. The ten digit tokens start with a Fourier code of
their value (cos, sin of 2 pi f d / 10, f = 1..5) in their first ten embedding dimensions: a
stand-in for a real model's number sense that makes the units digit of a sum quick to learn.

Every --eval-every steps and at the end it logs greedy accuracies:
  arithmetic     held-out single lines `name = x op y =` in the train number range
  planned        `test` problems prompted with the question, the gold plan and "Solution:"
  plain          `test` problems prompted with the question alone
The directory gets config.json, model.safetensors, the tokenizer and build.json (the command, the
arguments and the final figures).
"""
import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from tqdm import tqdm

from common import (COUNT, NONNEG, NONNEG_INT, POSITIVE, SHARE, STATE_FILE, Dist, StopRequest, check_checkpoint,
                    cosine_lr, load_model, log_json, mark_given, pad_id, restore_train_state, resume_run,
                    save_checkpoint, save_or_stop, saved_args, seed_everything, start_log, train_state)
from engine import Engine, complete
from model import ModelConfig, Transformer
from rewards import answer_correct
from tasks import (CHAIN_EVENTS, OOD_FRAMES, OPS, SPLITS, START_EVENTS, TRAIN_FRAMES, TRAIN_RECIPE, Frame,
                   generate_problem, in_test_bucket, make_split, meta_text, prompt_text)

EOS, PAD = "<|endoftext|>", "<|pad|>"
DEFAULT_OUT = "models/base"
STANDARD_SIZES = {"train": 8000, "test": 500, "ood_template": 500, "ood_steps": 500, "ood_numbers": 500,
                  "ood_distractor": 500}

# -----------------------------------------------------------------------------
# Fresh frames: the people and nouns of a worked problem, drawn anew for every problem

ONSETS = "b d f g k l m n p r s t v z br dr gl kr pl st tr".split()
VOWELS = "a e i o u".split()
CODAS = ["", "", "", "n", "l", "r", "m", "k"]
PEOPLE = ("Ada Alma Bela Bram Carl Cleo Dev Dina Egon Eva Fay Gil Gus Hal Hana Ines Isla Joel June Kai Kira Lara "
          "Luca Milo Mona Ned Nell Oona Otis Pete Pia Quinn Rhea Rita Saul Sven Tara Tess Ugo Uri Vic Vito Wes "
          "Wren Xavi Yael Yuri Zara Zed Iris Paul Gina Kofi Lena Ravi Nina Oscar Vera Will").split()
ITEMS = ("apples muffins stickers marbles books pencils cookies flowers pears plums lemons peaches cherries grapes "
         "carrots potatoes onions tomatoes melons nuts acorns pebbles stones buttons ribbons beads cards eggs "
         "oranges candles crayons markers erasers notebooks envelopes stamps postcards balloons kites toys "
         "blocks bricks tiles spoons forks bottles socks mittens scarves hats gloves puzzles dice rings "
         "bracelets necklaces bells whistles feathers leaves pinecones seeds roses tulips daisies cupcakes "
         "donuts cakes pies biscuits crackers pretzels waffles pancakes sandwiches apricots figs coconuts "
         "walnuts almonds peanuts raisins candies lollipops chocolates magnets batteries bolts nails screws "
         "springs wheels paints brushes sponges towels pillows blankets lamps clocks photos posters maps "
         "tickets badges medals trophies pins patches").split()
GROUPS = ("bag box jar sheet shelf tray plate vase basket bowl bin tin pouch sack case chest drawer cup pot "
          "carton pack bundle row stack tub barrel folder album wallet tube cart wagon packet bottle jug dish").split()
MATES = ("friend neighbor classmate cousin student teammate guest aunt brother sister uncle kid player worker "
         "chef artist helper nurse farmer baker singer dancer painter writer runner camper hiker scout pupil "
         "partner member").split()
PLURAL = {"box": "boxes", "shelf": "shelves", "pouch": "pouches", "dish": "dishes"}


def taboo_words() -> set[str]:
    """Words a fresh frame never uses: every word of the OOD frames, and the train frames' people
    (every question of a split names one of them first, so no fresh problem can be one)."""
    words = {p.lower() for f in TRAIN_FRAMES for p in f.people}
    for f in OOD_FRAMES:
        words |= {w.lower() for w in (*f.people, f.item, *f.group, *f.mates)}
    return words


def invented_word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables))


def fresh_word(rng: random.Random, pool: list[str], taboo: set[str], used: set[str], real: float) -> str:
    """A word from the pool (probability `real`) or a made-up one, never taboo or used already."""
    while True:
        w = rng.choice(pool) if rng.random() < real else invented_word(rng, rng.choice((2, 2, 3)))
        if w.lower() not in taboo and w.lower() not in used:
            used.add(w.lower())
            return w


def fresh_frame(rng: random.Random, taboo: set[str], real: float = 0.6) -> Frame:
    """Three people, an item, a container and companions, each drawn from a pool of common words
    (the train frames' nouns among them) or made up: combinations no split uses, so every noun
    must be read from the question."""
    used = set()
    people = tuple(fresh_word(rng, PEOPLE, taboo, used, real).capitalize() for _ in range(3))
    item = fresh_word(rng, ITEMS, taboo, used, real)
    item = item if item in ITEMS else item + "s"
    group, mate = fresh_word(rng, GROUPS, taboo, used, real), fresh_word(rng, MATES, taboo, used, real)
    plural = lambda w: PLURAL.get(w, w + "s")
    return Frame(people, item, (group, plural(group)), (mate, plural(mate)))


# -----------------------------------------------------------------------------
# Corpus: (prefix, target) text pairs; the loss covers the target only


def worked_doc(rng: random.Random, taboo: set[str], plan_share: float = 0.5) -> tuple[str, str]:
    """A fresh-frame worked problem of 1-5 steps: (question [+ plan], "Solution:..." + answer)."""
    recipe = replace(TRAIN_RECIPE, frames=(fresh_frame(rng, taboo),), steps=(1, 2, 3, 4, 5))
    p = None
    while p is None:
        p = generate_problem(rng, recipe)
    prefix = f"Question: {p['question']}\n" + (f"Plan:\n{p['plan']}\n" if rng.random() < plan_share else "")
    return prefix, f"Solution:\n{p['solution']}\nAnswer: {p['answer']}"


def story_doc(rng: random.Random, taboo: set[str], exclude: set[str]) -> tuple[str, str]:
    """Two to four questions of the train recipe in train or fresh frames, one per line."""
    out = []
    while len(out) < rng.randint(2, 4):
        frames = TRAIN_FRAMES if rng.random() < 0.5 else (fresh_frame(rng, taboo),)
        p = generate_problem(rng, replace(TRAIN_RECIPE, frames=frames))
        if p and p["question"] not in exclude and not in_test_bucket(p["question"]):
            out.append(p["question"])
    return "", "\n".join(out)


def quantity_names() -> list[str]:
    """Result names of the train frames' events ("apples after buying")."""
    names = []
    for f in TRAIN_FRAMES:
        names += [e[1].format(**f.slots()) for e in START_EVENTS]
        names += [f"{f.item} after {e[1]}" for e in CHAIN_EVENTS] + [f"{f.item} per {f.mates[0]}"]
    return names


def arithmetic_line(rng: random.Random, name: str) -> tuple[str, str]:
    """('name = x op y =', ' z'), or 'x op y =' without a name: one exact integer step in the train
    ranges (values <= 99; added or removed numbers, factors and divisors <= 9)."""
    op = rng.choice("+-*/")
    if op == "+":
        y = rng.randint(1, 9)
        x = rng.randint(1, 99 - y)
    elif op == "-":
        x = rng.randint(2, 99)
        y = rng.randint(1, min(9, x - 1))
    elif op == "*":
        y = rng.randint(2, 9)
        x = rng.randint(1, 99 // y)
    else:
        y = rng.randint(2, 9)
        x = y * rng.randint(1, 99 // y)
    return f"{name} = " * bool(name) + f"{x} {op} {y} =", f" {OPS[op](x, y)}"


def arithmetic_doc(rng: random.Random, names: list[str], taboo: set[str]) -> tuple[str, str]:
    """Twelve arithmetic lines `x op y = z`, a third of them named (train-frame or made-up names)."""
    lines = []
    for _ in range(12):
        u = rng.random()
        name = ("" if u > 1 / 3 else rng.choice(names) if u < 0.15 else
                f"{fresh_word(rng, [], taboo, set(), 0.0)}s after {rng.choice(CHAIN_EVENTS)[1]}")
        lines.append("".join(arithmetic_line(rng, name)))
    return "", "\n".join(lines)


class Corpus:
    """The document mix: shares of worked problems and story text, the rest arithmetic."""

    def __init__(self, worked: float, story: float, exclude: set[str]):
        self.worked, self.story, self.exclude = worked, story, exclude
        self.taboo = taboo_words()
        self.names = quantity_names()

    def doc(self, rng: random.Random) -> tuple[str, str]:
        u = rng.random()
        if u < self.worked:
            return worked_doc(rng, self.taboo)
        if u < self.worked + self.story:
            return story_doc(rng, self.taboo, self.exclude)
        return arithmetic_doc(rng, self.names, self.taboo)


def corpus_docs(n: int, seed: int, worked: float = 0.55, story: float = 0.1, exclude=frozenset()) -> list:
    """n (prefix, target) documents of the corpus, deterministic by seed."""
    rng, corpus = random.Random(f"docs-{seed}"), Corpus(worked, story, set(exclude))
    return [corpus.doc(rng) for _ in range(n)]


def split_questions() -> set[str]:
    """Questions of every split at its standard size: never in the corpus."""
    return {p.question for s in SPLITS for p in make_split(s, STANDARD_SIZES[s])}


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


def encode_doc(tok, prefix: str, target: str) -> tuple[list[int], list[bool]]:
    """ids of prefix + target + EOS, and which of them are supervised (target and EOS)."""
    a = tok(prefix)["input_ids"] if prefix else []
    b = tok(target)["input_ids"] + [tok.eos_token_id]
    return a + b, [False] * len(a) + [True] * len(b)


class Batches:
    """The batch of every step, a pure function of (seed, step) so that a resumed build sees the
    same data: documents are drawn `window` batches at a time from a generator seeded by the
    window's index, sorted by length (rows of a batch have similar lengths; one document per row,
    right-padded) and the window's batches shuffled."""

    def __init__(self, corpus: Corpus, tok, seed: int, batch: int, max_len: int, window: int = 16):
        self.corpus, self.tok, self.seed, self.batch, self.max_len, self.window = corpus, tok, seed, batch, max_len, window
        self.cached = (None, [])

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (B,T), sup (B,T) bool: the token is supervised)."""
        w = step // self.window
        if self.cached[0] != w:
            rng = random.Random(f"corpus-{self.seed}-{w}")
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


def evaluate_base(model, tok, n: int, seed: int = 0) -> dict:
    """Greedy accuracies (see the header) on n held-out items each."""
    engine = Engine(model, pad_id=pad_id(tok))
    rng = random.Random(f"heldout-{seed}")
    names = quantity_names()
    lines = [arithmetic_line(rng, rng.choice(names)) for _ in range(n)]
    outs = complete(engine, tok, [tok(q)["input_ids"] for q, _ in lines], 4)
    arith = sum(o.strip().split("\n")[0].strip() == a.strip() for o, (_, a) in zip(outs, lines)) / n
    test = make_split("test", n)
    acc = lambda prompts, new: sum(answer_correct(o, p.answer) for o, p in zip(
        complete(engine, tok, [tok(x)["input_ids"] for x in prompts], new), test)) / n
    planned = acc([prompt_text(p) + meta_text(p) for p in test], 96)
    plain = acc([prompt_text(p) for p in test], 128)
    return dict(arithmetic_acc=arith, test_planned_acc=planned, test_plain_acc=plain)


# -----------------------------------------------------------------------------
# Training


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Build the tokenizer and pretrain the default base model.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="output Hugging Face directory")
    ap.add_argument("--seed", type=int, default=0, help="seed for corpus, weights and data order")
    # corpus and tokenizer
    ap.add_argument("--worked", type=SHARE, default=0.55, help="share of worked fresh-frame problems")
    ap.add_argument("--story", type=SHARE, default=0.1, help="share of story documents (the rest: arithmetic)")
    ap.add_argument("--vocab", type=COUNT, default=1024, help="BPE vocabulary size")
    ap.add_argument("--tokenizer-docs", type=COUNT, default=20_000, help="documents the tokenizer is trained on")
    # model
    ap.add_argument("--dim", type=COUNT, default=256, help="hidden size")
    ap.add_argument("--layers", type=COUNT, default=4, help="transformer blocks")
    ap.add_argument("--heads", type=COUNT, default=8, help="attention heads")
    ap.add_argument("--kv-heads", type=COUNT, default=4, help="key/value heads")
    # optimisation
    ap.add_argument("--steps", type=COUNT, default=5000, help="optimizer steps")
    ap.add_argument("--batch", type=COUNT, default=16, help="documents per step")
    ap.add_argument("--max-len", type=COUNT, default=512, help="longest document in tokens (longer ones are cut)")
    ap.add_argument("--lr", type=POSITIVE, default=2e-3, help="peak learning rate")
    ap.add_argument("--warmup", type=NONNEG_INT, default=200, help="warm-up steps")
    ap.add_argument("--weight-decay", type=NONNEG, default=0.1, help="AdamW weight decay")
    ap.add_argument("--eval-every", type=NONNEG_INT, default=500, help="steps between evaluations (0: only at the end)")
    ap.add_argument("--eval-n", type=NONNEG_INT, default=200, help="items per accuracy")
    ap.add_argument("--log-every", type=COUNT, default=100, help="steps between JSON log lines")
    ap.add_argument("--save-every", type=COUNT, default=500, help="steps between checkpoints")
    ap.add_argument("--resume", action="store_true", help="continue the build in --out from its checkpoint, "
                    "with the arguments saved there (other values are refused, except --steps and the runtime flags)")
    ap.add_argument("--stop-at", type=COUNT, default=None, help="save and stop after this step (--resume continues)")
    ap.set_defaults(device="cpu")  # trains in float32 on the CPU
    args = ap.parse_args(argv)
    if args.worked + args.story > 1:
        ap.error(f"--worked {args.worked} and --story {args.story} are shares of the corpus: together at most 1")
    if args.dim % args.heads or args.heads % args.kv_heads:
        ap.error(f"--dim {args.dim} must be a multiple of --heads {args.heads}, and that of --kv-heads {args.kv_heads}")
    return mark_given(ap, argv, args)


def build_model(args, tok) -> Transformer:
    cfg = ModelConfig(model_type="llama", vocab_size=len(tok), hidden_size=args.dim,
                      intermediate_size=int(args.dim * 8 / 3) // 32 * 32, num_hidden_layers=args.layers,
                      num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, max_position_embeddings=1024,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return init_digit_embeddings(Transformer(cfg).init_weights(), tok)


def main(argv=None):
    args = parse_args(argv)
    state = None
    if args.resume:
        args, state = resume_run(args, Dist())
        print(f"resuming {args.out} at step {state['step']} (arguments from its checkpoint)", flush=True)
    seed_everything(args.seed)
    corpus = Corpus(args.worked, args.story, split_questions())
    if state:
        tok = check_checkpoint(args.out, "--out")
        model = load_model(args.out)
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
    start, totals = 0, dict(tokens=0, sup_tokens=0, seconds=0.0, metrics={}, command=command)
    if state:
        start, totals = restore_train_state(state, opt)
    log_path = start_log(args, state, Dist())
    batch_at = Batches(corpus, tok, args.seed, args.batch, args.max_len)

    def checkpoint(step):
        save_checkpoint(args.out, model, tok, train_state(step, opt, totals, args))

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
            model.eval()
            totals["metrics"] = evaluate_base(model, tok, args.eval_n)
            log_json(dict(eval=True, step=done, **totals["metrics"]), log_path)
        if save_or_stop(done, args, stop, Dist(), torch.device("cpu"), checkpoint, "base.py"):
            return
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


def finish_build(args, model, tok, totals: dict, loss: float, log_path: str):
    """build.json with the command, its arguments and the figures; the optimiser state removed."""
    settings = {k: v for k, v in saved_args(args).items() if k not in ("resume", "stop_at", "device")}
    summary = dict(summary=True, command=totals["command"], args=settings, params=model.num_params(), vocab=len(tok),
                   tokens_trained=totals["tokens"], supervised_tokens=totals["sup_tokens"],
                   train_seconds=round(totals["seconds"], 1), final_loss=loss, **totals["metrics"])
    with open(os.path.join(args.out, "build.json"), "w") as f:
        json.dump(summary, f, indent=2)
    os.remove(os.path.join(args.out, STATE_FILE))  # a finished build ships without optimizer state
    log_json(summary, log_path)


if __name__ == "__main__":
    main()
