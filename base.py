"""
The embedded default's base model: a tokenizer and a tiny Llama pretrained on a synthetic corpus,
standing in for a real pretrained LM that knows the language and arithmetic of the world but was
never taught to solve its problems.

    python base.py                       # writes runs/base (a few minutes on a laptop CPU)
    python base.py --out runs/base2 --steps 400 --seed 1

Tokenizer: byte-level BPE (`tokenizers`) trained on the corpus, with every digit its own token,
as the Llama 3 and Qwen tokenizers do, so numbers are read and written digit by digit. Special
tokens: <|endoftext|> (end of a document; the stop token) and <|pad|>. Saved with the model, so
`transformers.AutoTokenizer.from_pretrained("runs/base")` opens it.

Corpus, exactly (documents separated by <|endoftext|>, packed into fixed-length rows):
  (a) story text: the question text alone of freshly drawn problems from every frame and phrasing
      of the world, OOD frames included (the model should know the language of every split);
      never a plan, a solution or an answer, and never the text of a question in any split of
      the standard sizes;
  (b) arithmetic: lines `name = x op y = z` with +, -, *, exact /, four per document, names drawn
      from the world's quantity names; 85% in the train range (values <= 99), 15% wider (<= 9,999);
  (c) worked problems: "Question: ...\nSolution:\n<lines>\nAnswer: N" for one-step problems of
      any frame and 2-5-step problems of corpus-only frames (people and items no split uses).
  It holds no plan text and no worked solution of any split's problem: every split's problems have
  at least two steps, and the multi-step worked problems use frames no split uses.

Model: Llama architecture from model.py (tied embeddings, GQA), trained with AdamW, warm-up and
cosine decay, on next-token loss. The ten digit tokens start with a Fourier code of their value
(cos, sin of 2 pi f d / 10, f = 1..5) in their first ten embedding dimensions: a stand-in for the
number sense of a real pretrained model, which makes the units digit of a sum (addition modulo 10,
a rotation in that code) quick to learn.

At the end it prints three accuracies (greedy decoding):
  arithmetic     held-out single lines `name = x op y =` in the train number range
  test, plain    test problems prompted with the question alone
  test, planned  test problems prompted with the question, the gold plan and "Solution:"
"""
import argparse
import math
import random
import re
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from tqdm import tqdm

from common import cosine_lr, log_json, seed_everything
from engine import Engine, complete
from model import ModelConfig, Transformer
from tasks import (CHAIN_EVENTS, OOD_FRAMES, OPS, RECIPES, SPLITS, START_EVENTS, TRAIN_FRAMES, TRAIN_RECIPE, Frame,
                   generate_problem, make_split, meta_text, prompt_text)

EOS, PAD = "<|endoftext|>", "<|pad|>"
CORPUS_FRAMES = (  # used only for the worked easy problems of the corpus
    Frame(("Iris", "Paul", "Gina"), "oranges", ("crate", "crates"), ("worker", "workers")),
    Frame(("Kofi", "Lena", "Ravi"), "cards", ("deck", "decks"), ("player", "players")),
    Frame(("Nina", "Oscar", "Uma"), "eggs", ("carton", "cartons"), ("chef", "chefs")),
    Frame(("Vera", "Will", "Xena"), "beads", ("string", "strings"), ("artist", "artists")),
)
STANDARD_SIZES = {"train": 8000, "test": 500, "ood_template": 500, "ood_steps": 500, "ood_numbers": 500,
                  "ood_distractor": 500}


# -----------------------------------------------------------------------------
# Corpus


def quantity_names() -> list[str]:
    frames = TRAIN_FRAMES + OOD_FRAMES + CORPUS_FRAMES
    names = []
    for f in frames:
        names += [e[1].format(**f.slots()) for e in START_EVENTS]
        names += [f"{f.item} after {e[1]}" for e in CHAIN_EVENTS] + [f"{f.item} per {f.mates[0]}"]
    return names


def arithmetic_line(rng: random.Random, names: list[str], wide: bool) -> tuple[str, str]:
    """('name = x op y =', ' z'): one exact integer step. Train range: values <= 99, added or
    removed numbers <= 9, factors and divisors <= 9; `wide`: up to 9,999, 200 and 20."""
    top, small, factor = (9999, 200, 20) if wide else (99, 9, 9)
    op = rng.choice("+-*/")
    if op == "+":
        y = rng.randint(1, small)
        x = rng.randint(1, max(1, top - y))
    elif op == "-":
        x = rng.randint(2, top)
        y = rng.randint(1, min(small, x - 1))
    elif op == "*":
        y = rng.randint(2, factor)
        x = rng.randint(1, max(1, top // y))
    else:
        y = rng.randint(2, factor)
        x = y * rng.randint(1, max(1, top // y))
    return f"{rng.choice(names)} = {x} {op} {y} =", f" {OPS[op](x, y)}"


def arithmetic_doc(rng: random.Random, names: list[str]) -> str:
    """Four arithmetic lines, each in the train range with probability 0.85."""
    return "\n".join("".join(arithmetic_line(rng, names, rng.random() < 0.15)) for _ in range(4))


def build_corpus(n_docs: int, seed: int, exclude: set) -> list[str]:
    """n_docs documents: 15% story text, 60% arithmetic (4 lines each), 25% worked problems."""
    rng = random.Random(f"corpus-{seed}")
    names = quantity_names()
    story_recipes = [RECIPES["train"], RECIPES["ood_template"], RECIPES["ood_steps"], RECIPES["ood_numbers"]]
    easy = [replace(TRAIN_RECIPE, frames=TRAIN_FRAMES + OOD_FRAMES + CORPUS_FRAMES, phrasings=slice(0, 3), steps=(1,)),
            replace(TRAIN_RECIPE, frames=CORPUS_FRAMES, phrasings=slice(0, 3), steps=(2, 3, 4, 5))]
    docs = []
    while len(docs) < n_docs:
        kind = rng.random()
        if kind < 0.15:
            p = generate_problem(rng, rng.choice(story_recipes))
            if p and p["question"] not in exclude:
                docs.append(p["question"])
        elif kind < 0.75:
            docs.append(arithmetic_doc(rng, names))
        else:
            p = generate_problem(rng, rng.choice(easy))
            if p:
                docs.append(f"Question: {p['question']}\nSolution:\n{p['solution']}\nAnswer: {p['answer']}")
    return docs


# -----------------------------------------------------------------------------
# Tokenizer


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


def pack(docs: list[str], tok, seq_len: int) -> torch.Tensor:
    """Concatenate documents (each followed by EOS) into rows of seq_len + 1 tokens."""
    ids = []
    for enc in tok(docs)["input_ids"]:
        ids += enc + [tok.eos_token_id]
    n = len(ids) // (seq_len + 1)
    return torch.tensor(ids[: n * (seq_len + 1)]).view(n, seq_len + 1)


# -----------------------------------------------------------------------------
# Evaluation

ANSWER = re.compile(r"Answer:\s*(-?\d+(?:\.\d+)?)")


def first_number(text: str) -> str | None:
    m = re.match(r"\s*(-?\d+)", text)
    return m.group(1) if m else None


def greedy(engine, tok, prompts: list[str], max_new: int) -> list[str]:
    return complete(engine, tok, [tok(p)["input_ids"] for p in prompts], max_new)


def evaluate_base(model, tok, n: int, seed: int) -> dict:
    """The three accuracies printed at the end (see the header)."""
    engine = Engine(model, pad_id=tok.pad_token_id)
    rng = random.Random(f"heldout-{seed}")
    lines = [arithmetic_line(rng, quantity_names(), wide=False) for _ in range(n)]
    outs = greedy(engine, tok, [q for q, _ in lines], max_new=8)
    arith = sum(first_number(o) == a.strip() for o, (_, a) in zip(outs, lines)) / n
    test = make_split("test", n, seed)
    plain = greedy(engine, tok, [prompt_text(p) for p in test], max_new=128)
    planned = greedy(engine, tok, [prompt_text(p) + meta_text(p) for p in test], max_new=100)
    acc = lambda outs: sum((m := ANSWER.search(o)) is not None and m.group(1) == p.answer
                           for o, p in zip(outs, test)) / n
    return dict(arithmetic_acc=arith, test_plain_acc=acc(plain), test_planned_acc=acc(planned),
                example_planned=planned[0])


# -----------------------------------------------------------------------------
# Training


def main():
    ap = argparse.ArgumentParser(description="Build the tokenizer and pretrain the tiny base model.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default="runs/base", help="output Hugging Face directory")
    ap.add_argument("--seed", type=int, default=0, help="seed for corpus, weights and data order")
    # corpus and tokenizer
    ap.add_argument("--docs", type=int, default=30_000, help="corpus documents")
    ap.add_argument("--vocab", type=int, default=768, help="BPE vocabulary size")
    # model
    ap.add_argument("--dim", type=int, default=192, help="hidden size")
    ap.add_argument("--layers", type=int, default=4, help="transformer blocks")
    ap.add_argument("--heads", type=int, default=6, help="attention heads (2 key/value heads)")
    # optimisation
    ap.add_argument("--steps", type=int, default=3200, help="optimizer steps")
    ap.add_argument("--batch", type=int, default=4, help="rows per step (small batches, many updates: faster arithmetic)")
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per row")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    ap.add_argument("--warmup", type=int, default=100, help="warm-up steps")
    ap.add_argument("--eval-n", type=int, default=200, help="problems per final accuracy")
    ap.add_argument("--log-every", type=int, default=200, help="steps between JSON log lines")
    args = ap.parse_args()

    t0 = time.time()
    seed_everything(args.seed)
    exclude = {p.question for s in SPLITS for p in make_split(s, STANDARD_SIZES[s])}
    docs = build_corpus(args.docs, args.seed, exclude)
    tok = train_tokenizer(docs, args.vocab)
    data = pack(docs, tok, args.seq_len)  # (rows, seq_len+1)
    print(f"corpus: {len(docs):,} documents, {data.numel():,} tokens in {len(data):,} rows; "
          f"vocabulary {len(tok)}")

    cfg = ModelConfig(model_type="llama", vocab_size=len(tok), hidden_size=args.dim,
                      intermediate_size=int(args.dim * 8 / 3) // 32 * 32, num_hidden_layers=args.layers,
                      num_attention_heads=args.heads, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = init_digit_embeddings(Transformer(cfg).init_weights(), tok)
    print(f"model: {model.num_params() / 1e6:.2f}M parameters")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))
    model.train()
    bar = tqdm(range(args.steps), desc="pretrain")
    for step in bar:
        rows = data[order[(step * args.batch + torch.arange(args.batch)) % len(data)]]
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, args.steps, args.lr, args.warmup)
        logits = model(rows[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten())
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % args.log_every == 0 or step == args.steps - 1:
            log_json(dict(step=step, loss=round(loss.item(), 4), grad_norm=round(norm.item(), 3),
                          lr=opt.param_groups[0]["lr"], seconds=round(time.time() - t0, 1)))
    model.eval()
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    train_seconds = time.time() - t0
    metrics = evaluate_base(model, tok, args.eval_n, args.seed)
    example = metrics.pop("example_planned")
    print("example (test problem, prompted with its gold plan):\n" + example.strip())
    log_json(dict(summary=True, out=args.out, params=model.num_params(), corpus_tokens=data.numel(),
                  tokens_trained=args.steps * args.batch * args.seq_len, train_seconds=round(train_seconds, 1),
                  total_seconds=round(time.time() - t0, 1), final_loss=round(loss.item(), 4), **metrics))


if __name__ == "__main__":
    main()
