"""
Teacher: writes CoMT targets (plans, the meta-thoughts) and CoT targets (worked solutions) for real
training problems, as the JSONL `sft_comt.py --targets` reads.

    python teacher.py --teacher rules --data gsm8k:train --out runs/gsm8k_targets.jsonl
    python teacher.py --teacher path/to/chat_model --data gsm8k:train --limit 50 --out runs/plans50.jsonl

Output: one JSON object per problem: {"id", "plan", "solution", "plan_source"}. `solution` is the
gold worked solution without GSM8K's <<expr=value>> annotations and "#### N" line (the CoT target);
`plan` has no digit at all; `plan_source` says who wrote it ("model", or "rules").

--teacher DIR: a chat model (any comt/model.py architecture) is prompted, through its chat template,
with TEACHER_PROMPT (below), as the paper prompts its teacher (LLaMA-3.1-70B there): describe the
steps with names of quantities only, no numbers. Completions are sampled in batches with the
engine. Every token that holds a digit is banned while sampling (--ban-digits, on by default: a
small teacher otherwise numbers its steps "Step 1:" and computes with the question's numbers); a
completion that still contains a digit, is empty, or was cut off by --max-new-tokens is rejected,
and the problem is sampled again, up to --tries times; a problem still without a plan gets the
rules plan (counted separately). The yield (plans accepted from the model / problems) and the
rejections by reason are reported.

--teacher rules: no model. Each annotated step of the gold solution becomes one plan line: the
sentence with its numbers removed, then the step's expression in words, where each number is
named: "the first result" (an earlier step's value), "the given friends" (a number of the
question, named by the words after it in its sentence, or else before it), a number word for
small constants ("two", "sixty"), or "a constant". The line "The answer is the <last> result."
ends the plan. A solution without annotations becomes one line per sentence with its numbers
named the same way. A plan that still holds a digit is left out (and counted).

Deviation from the paper: the rules teacher is our offline stand-in; its plans are more literal
than an LLM teacher's.
"""
import argparse
import json
import os
import re
import time
from collections import Counter
from fractions import Fraction

from comt.benchmarks import ANNOTATION, BENCHMARKS, benchmark_path, clean_solution, problems_for_cli
from comt.common import check_checkpoint, load_model, log_json, pad_id, pick_device, unwritable
from comt.flags import COUNT, NONNEG, SEED, number
from rewards import exact_number, has_digit

TEACHER_PROMPT = (
    "Here is a math word problem. Describe, step by step, how to solve it, in natural language and "
    "using only the names of the quantities involved. Do not calculate anything and do not write any "
    "number or digit. Write one short step per line, and end with a line that says which quantity is "
    "the answer.\n\nProblem: {question}")

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
            "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
            "eighteenth", "nineteenth", "twentieth")
SMALL = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
WORDS = {Fraction(k): w for k, w in {**{str(i): w for i, w in enumerate(SMALL)}, "30": "thirty", "40": "forty",
                                       "50": "fifty", "60": "sixty", "100": "one hundred", "1000": "one thousand",
                                       "0.5": "one half", "0.25": "one quarter", "0.1": "one tenth"}.items()}
OPERATORS = {"+": "plus", "-": "minus", "*": "times", "x": "times", "/": "divided by", "(": "(", ")": ")"}
SKIP = {"of", "her", "his", "their", "its", "the", "a", "an", "each", "per", "more", "than", "to", "in", "for", "and",
        "which", "that", "only", "has", "have", "is", "are", "was", "were", "with", "on", "at", "by", "as", "so",
        "now", "if", "they", "he", "she", "it", "times", "every", "then"}
NUM = re.compile(r"\d[\d,]*(?:\.\d+)?")
EXPR_TOKEN = re.compile(r"\d[\d,]*(?:\.\d+)?|[-+*/x()]")


# -----------------------------------------------------------------------------
# Rules


def ordinal(k: int) -> str:
    return ORDINALS[k] if k < len(ORDINALS) else "earlier"


def question_names(question: str) -> dict:
    """{value: name} for the numbers of a question, named by the content words after them:
    "48 of her friends" -> "the given friends"."""
    names = {}
    for m in NUM.finditer(question):
        after = re.split(r"[.?!;](?:\s|$)", question[m.end():], maxsplit=1)[0]  # the rest of its sentence
        before = re.split(r"[.?!;]\s", question[:m.start()])[-1]
        words = content_words(content_words(after.split()[:5])[:2]) or content_words(before.split()[-3:])[-2:]
        v = exact_number(m.group().replace(",", ""))
        if v is not None and v not in names:
            names[v] = "the given " + (" ".join(words) if words else "number")
    return names


def content_words(words: list[str]) -> list[str]:
    """Lower-cased words without digits, function words trimmed from both ends."""
    words = [w.strip(".,;:?!$%'\"()").lower() for w in words]
    words = [w for w in words if w and not has_digit(w)]
    while words and words[0] in SKIP:
        words.pop(0)
    while words and words[-1] in SKIP:
        words.pop()
    return words


def name_number(v: Fraction, results: list[Fraction | None], given: dict) -> str:
    for k in range(len(results) - 1, -1, -1):
        if results[k] is not None and results[k] == v:
            return f"the {ordinal(k)} result"
    if v in given:
        return given[v]
    return WORDS.get(v, "a constant")


def expression_words(expr: str, results: list[Fraction | None], given: dict) -> str:
    """"48/2" -> "the given friends divided by two"."""
    out = []
    for t in EXPR_TOKEN.findall(expr):
        out.append(OPERATORS[t] if t in OPERATORS else name_number(exact_number(t.replace(",", "")), results, given))
    return " ".join(out).replace("( ", "(").replace(" )", ")")


def describe(line: str) -> str:
    """A solution sentence without its numbers, annotation and arithmetic symbols."""
    text = re.sub(r"<<[^>]*>>\s*[\d,.]*", " ", line)
    text = "".join(" " if ch.isnumeric() else ch for ch in NUM.sub(" ", text))  # also ³, ½ and the like
    text = re.sub(r"(?<!\w)[-+*/x=$%()](?!\w)", " ", text)
    text = re.sub(r"\s+([.,;:!?])", r"\1", re.sub(r"\s+", " ", text)).strip(" .,;:")
    return text


def rules_plan(question: str, solution: str) -> str | None:
    """A digit-free plan from a GSM8K-style worked solution (see the header); None if there is none."""
    given = question_names(question)
    results, lines = [], []
    for line in (solution or "").split("####")[0].splitlines():
        steps = ANNOTATION.findall(line)
        if not steps:
            continue
        parts = []
        for expr, value in steps:
            parts.append(expression_words(expr, results, given))
            results.append(exact_number(value.replace(",", "").strip().rstrip(".")))
        what = describe(line)
        k = len(results) - 1
        lines.append(f"{ordinal(len(lines)).capitalize()}, {what or 'compute'}: {'; '.join(parts)} "
                     f"(the {ordinal(k)} result).")
    if lines:
        lines.append(f"The answer is the {ordinal(len(results) - 1)} result.")
    else:  # no annotations: each sentence with its numbers named
        for line in (solution or "").split("####")[0].splitlines():
            named = NUM.sub(lambda m: name_number(exact_number(m.group().replace(",", "")), [], given), line)
            what = describe(named)
            if what:
                lines.append(f"{ordinal(len(lines)).capitalize()}, {what}.")
        if not lines:
            return None
        lines.append("The answer is the result of the last step.")
    plan = "\n".join(lines)
    return None if has_digit(plan) else plan


# -----------------------------------------------------------------------------
# Model teacher


def rejection(text: str, stopped: bool) -> str | None:
    """Why a sampled plan is rejected (None: accepted): it must end on its own, hold some text
    and no digit."""
    if not text.strip():
        return "empty"
    if not stopped:
        return "cut_off"
    return "digit" if has_digit(text) else None


def digit_tokens(tok) -> list[int]:
    """Ids of every vocabulary entry whose decoded text holds a digit."""
    return [i for i in range(len(tok)) if has_digit(tok.decode([i]))]


def model_plans(problems, args, rejected: Counter) -> dict:
    """{problem id: plan} from the teacher model; problems without an accepted plan are absent.
    Counts each rejected sample's reason into `rejected`."""
    from tqdm import tqdm

    from comt.engine import Engine, stop_ids
    tok = check_checkpoint(args.teacher, "--teacher")
    model = load_model(args.teacher, device=pick_device(args.device)).eval()
    pad = pad_id(tok)
    engine = Engine(model, pad_id=pad)
    stops = stop_ids(tok, model)
    banned = digit_tokens(tok) if args.ban_digits else []

    def prompt(p):
        msg = [{"role": "user", "content": TEACHER_PROMPT.format(question=p.question)}]
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(msg, add_generation_prompt=True, tokenize=True, return_dict=False)
        return tok(msg[0]["content"] + "\n")["input_ids"]

    plans, todo = {}, list(problems)
    for attempt in range(args.tries):
        bar = tqdm(range(0, len(todo), args.batch), desc=f"teacher try {attempt + 1}", leave=False)
        for i in bar:
            chunk = todo[i:i + args.batch]
            s = engine.generate([prompt(p) for p in chunk], max_new_tokens=args.max_new_tokens,
                                temperature=args.temperature, top_p=args.top_p, stop_tokens=stops,
                                seed=args.seed * 7919 + attempt * 104_729 + i, banned_tokens=banned)
            for r, p in enumerate(chunk):
                text = tok.decode(s.completion(r)[0], skip_special_tokens=True).strip()
                why = rejection(text, bool(s.stopped[r]))
                if why:
                    rejected[why] += 1
                else:
                    plans[p.id] = text
        todo = [p for p in todo if p.id not in plans]
        if not todo:
            break
    return plans


# -----------------------------------------------------------------------------
# Main


def token_count(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"]) if tok else len(text.split())


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Write plan (CoMT) and solution (CoT) targets for sft_comt.py --targets.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--teacher", default="rules", help="'rules' (offline, from annotated gold solutions) or a chat "
                    "model directory")
    ap.add_argument("--data", default="gsm8k:train", help="a benchmark (gsm8k:train), a JSONL path, or hub:NAME:SPLIT")
    ap.add_argument("--limit", type=COUNT, default=None, help="only the first N problems")
    ap.add_argument("--out", required=True, help="output JSONL")
    ap.add_argument("--tries", type=COUNT, default=4, help="samples per problem before the rules fallback")
    ap.add_argument("--batch", type=COUNT, default=16, help="prompts per engine call")
    ap.add_argument("--max-new-tokens", type=COUNT, default=256, help="plan length limit (longer plans are rejected)")
    ap.add_argument("--temperature", type=NONNEG, default=0.7, help="teacher sampling temperature")
    ap.add_argument("--top-p", type=number(above=0, hi=1), default=0.95, help="teacher nucleus sampling")
    ap.add_argument("--seed", type=SEED, default=0, help="sampling seed")
    ap.add_argument("--ban-digits", action=argparse.BooleanOptionalAction, default=True,
                    help="never sample a token that holds a digit")
    ap.add_argument("--tokenizer", default=None, help="tokenizer directory for the token counts in the summary "
                    "(default: the teacher's; words for rules)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = ap.parse_args(argv)
    for flag, path in (("--teacher", None if args.teacher == "rules" else args.teacher), ("--tokenizer", args.tokenizer)):
        if path and not os.path.isdir(path):
            ap.error(f"{flag} {path}: not a directory (a local Hugging Face model/tokenizer directory)")
    source = data_file(args.data)
    if source and os.path.exists(args.out) and os.path.samefile(args.out, source):
        ap.error(f"--out {args.out} is the --data file: write the targets to another file")
    problem = unwritable(args.out)  # before the work, not after it
    if problem:
        ap.error(f"--out {args.out}: {problem}")
    return args


def data_file(spec: str) -> str | None:
    """The file --data reads (a path, or a benchmark name's file), None for the hub or a bad name."""
    if os.path.isfile(spec):
        return spec
    name, _, split = spec.partition(":")
    try:
        return benchmark_path(name, split or None, None) if name in BENCHMARKS else None
    except (ValueError, FileNotFoundError):
        return None


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    problems = problems_for_cli(args.data, 0, args.limit, args.seed)
    rules = {p.id: rules_plan(p.question, p.solution) for p in problems}
    rejected = Counter()
    from_model = {} if args.teacher == "rules" else model_plans(problems, args, rejected)
    count_with = args.tokenizer or (None if args.teacher == "rules" else args.teacher)
    tok = None
    if count_with:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(count_with)
    rows, plan_tokens, sol_tokens = [], [], []
    for p in problems:
        plan, source = (from_model[p.id], "model") if p.id in from_model else (rules[p.id], "rules")
        if plan is None:
            continue
        solution = clean_solution(p.solution) if p.solution else None
        rows.append(dict(id=p.id, plan=plan, solution=solution, plan_source=source))
        plan_tokens.append(token_count(tok, plan))
        if solution:
            sol_tokens.append(token_count(tok, solution))
    if not rows:
        raise SystemExit(f"no plan written for any of the {len(problems)} problems of {args.data} (the rules need "
                         f"annotated solutions, the model's samples were all rejected: {dict(rejected)}); "
                         f"{args.out} not written")
    with open(args.out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    n = len(problems)
    unit = "tokens" if tok else "words"
    log_json(dict(summary=True, out=args.out, teacher=args.teacher, problems=n, written=len(rows),
                  model_yield=round(len(from_model) / n, 4) if args.teacher != "rules" else None,
                  rules_yield=round(sum(v is not None for v in rules.values()) / n, 4),
                  rejected=dict(rejected), from_rules=sum(r["plan_source"] == "rules" for r in rows),
                  plans_without_digit=round(sum(not has_digit(r["plan"]) for r in rows) / n, 4),
                  **{f"mean_plan_{unit}": round(sum(plan_tokens) / max(len(plan_tokens), 1), 1),
                     f"mean_solution_{unit}": round(sum(sol_tokens) / max(len(sol_tokens), 1), 1)},
                  seconds=round(time.time() - t0, 1)))


if __name__ == "__main__":
    main()
