"""
Real problems and the files a user hands in: GSM8K-family benchmarks, JSONL files, Hugging Face
datasets, and the plan/solution targets of stage 1 (--targets). Every reader names the file and
line of what it refuses.

`load_problems("gsm8k:train")`, `"svamp"`, a JSONL path, or `"hub:openai/gsm8k:main:test"`:
    - names read the normalised JSONL files of the benchmark data folder (../shared/data by
      default; set COMT_DATA_DIR or pass data_dir). Names: gsm8k, svamp, asdiv, mawps, tabmwp,
      gsm_hard, gsm_symbolic; the split defaults to test (else test1k, else the folder's only file).
    - a path reads any JSONL with `question` and `answer` fields (plus optional `id`, `solution`),
      including the raw upstream GSM8K files whose `answer` is a worked solution ending "#### N".
    - hub:NAME[:CONFIG]:SPLIT loads a Hugging Face dataset (network, or a local repository folder as NAME).
GSM8K-style `<<expr=value>>` annotations in a solution become the gold intermediate values.
A malformed row raises an error naming the file and line.
`problems_for_cli` is the one entry point of the training scripts' --data (synthetic splits
included); `read_targets` reads --targets (teacher.py writes them).
"""
import json
import os
import re
import sys
from fractions import Fraction

from comt.tasks import RECIPES, SPLITS, Problem, make_split
from rewards import exact_number, has_digit, number_text

BENCHMARKS = ("gsm8k", "svamp", "asdiv", "mawps", "tabmwp", "gsm_hard", "gsm_symbolic")
ANNOTATION = re.compile(r"<<([^=<>]*)=([^<>]*)>>")
GROUPED = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")  # 1,234,567.5


def default_data_dir() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.environ.get("COMT_DATA_DIR", os.path.join(here, "..", "..", "shared", "data"))


def canonical_answer(text: str) -> str:
    """A gold answer as canonical text, read exactly: '1,234' -> '1234', '$5.00' -> '5', '72.0' -> '72',
    '−3' -> '-3', '3/4' -> '0.75', '1e+20' -> '100000000000000000000'. Anything that is not one number
    (words, two numbers, '1,23') raises ValueError: a gold answer is refused, never guessed."""
    s = str(text).strip().replace("−", "-").replace("$", "").removesuffix("%").strip()
    if GROUPED.fullmatch(s):
        s = s.replace(",", "")
    value = exact_number(s)
    if value is None:
        raise ValueError(f"answer {text!r} is not one number that can be read exactly")
    return number_text(value)


def gold_intermediates(solution: str | None) -> list[Fraction]:
    """Exact values of GSM8K-style <<expr=value>> annotations, in order (unreadable ones skipped)."""
    values = (exact_number(v.replace(",", "").strip().rstrip(".")) for _, v in ANNOTATION.findall(solution or ""))
    return [v for v in values if v is not None]


def clean_solution(text: str) -> str:
    """A GSM8K worked solution as plain lines: <<expr=value>> annotations and the "#### N" line dropped."""
    return re.sub(r"<<[^>]*>>", "", text).split("####")[0].strip()


def problem_from_row(row: dict, source: str, where: str) -> Problem:
    """One JSON row -> Problem. Raw GSM8K rows carry the worked solution in `answer`."""
    if not isinstance(row, dict) or not isinstance(row.get("question"), str) or "answer" not in row:
        raise ValueError(f"{where}: a row needs a string 'question' and an 'answer'")
    answer, solution = str(row["answer"]), row.get("solution")
    if "####" in answer:  # upstream GSM8K: "worked solution\n#### 72"
        solution, answer = answer, answer.rsplit("####", 1)[1]
    try:
        answer = canonical_answer(answer)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return Problem(id=str(row.get("id", where)), question=row["question"], answer=answer,
                   split=str(row.get("split", "")), solution=solution,
                   intermediates=gold_intermediates(solution), source=source)


def read_jsonl(path: str, source: str | None = None) -> list[Problem]:
    """The problems of a JSONL file, one per line; a malformed line or an id that repeats is an error
    naming the file and line."""
    source = source or os.path.splitext(os.path.basename(path))[0]
    out, seen = [], {}
    for lineno, line in enumerate(text_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:  # a number with a fraction part is kept as its text, so a gold answer is read exactly
            row = json.loads(line, parse_float=str)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
        out.append(problem_from_row(row, source, where))
        if seen.setdefault(out[-1].id, lineno) != lineno:
            raise ValueError(f"{where}: id {out[-1].id!r} repeats line {seen[out[-1].id]} (joined files that each "
                             f"number from 0? give every problem its own id)")
    return out


MAX_LINE = 1 << 20  # bytes in one line of a JSONL input (a problem or a target is a few hundred)


def text_lines(path: str):
    """The lines of a UTF-8 text file; a line that is not UTF-8, or longer than MAX_LINE bytes, is
    refused naming the file and line (a huge line is never read whole)."""
    with open(path, "rb") as f:
        lineno = 0
        while line := f.readline(MAX_LINE + 1):
            lineno += 1
            if len(line) > MAX_LINE:
                raise ValueError(f"{path}:{lineno}: a line of over {MAX_LINE:,} bytes; a problem or a target "
                                 f"fits in far less")
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text (byte {e.start + 1} of the line)") from None


def benchmark_path(name: str, split: str | None, data_dir: str | None) -> str:
    folder = os.path.join(data_dir or default_data_dir(), name)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"benchmark folder {folder} not found: set COMT_DATA_DIR (or pass "
                                f"--data-dir) to the folder holding {', '.join(BENCHMARKS)}")
    files = sorted(f[:-6] for f in os.listdir(folder) if f.endswith(".jsonl"))
    tests = [f for f in files if f.startswith("test")]
    split = split or ("test" if "test" in files else tests[0] if tests else files[0] if len(files) == 1 else None)
    if split not in files:
        raise ValueError(f"{name}: choose a split from {', '.join(files)} (as {name}:SPLIT)")
    return os.path.join(folder, split + ".jsonl")


def load_hub(spec: str) -> list[Problem]:
    """hub:NAME[:CONFIG]:SPLIT via `datasets` (network, or NAME a local repository folder)."""
    parts = spec.split(":")[1:]
    if len(parts) not in (2, 3):
        raise ValueError(f"{spec!r}: use hub:NAME[:CONFIG]:SPLIT, e.g. hub:openai/gsm8k:main:test")
    try:
        import datasets
    except ImportError:
        raise SystemExit("hub datasets need the `datasets` package: pip install datasets") from None
    name, config, split = (parts[0], None, parts[1]) if len(parts) == 2 else parts
    try:
        rows = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # offline, no such dataset or split, a broken cache: datasets raises many kinds
        raise ValueError(f"cannot load it ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}); without "
                         f"a network, give NAME as a local dataset folder or use a JSONL file") from None
    return [problem_from_row(dict(r), name, f"{spec}[{i}]") for i, r in enumerate(rows)]


def load_problems(spec: str, data_dir: str | None = None, n: int | None = None, seed: int = 0) -> list[Problem]:
    """
    spec: a synthetic split ("train", "ood_steps", ...), a benchmark name with an optional split
    ("gsm8k", "gsm8k:train"), a JSONL path, or "hub:NAME[:CONFIG]:SPLIT".
    n: synthetic split size (required for synthetic) or the first n rows of real data.
    """
    if spec in RECIPES:
        if n is None:
            raise ValueError("synthetic splits need a size n")
        return make_split(spec, n, seed)
    if spec.startswith("hub:"):
        rows = load_hub(spec)
    elif os.path.isdir(spec):
        raise ValueError("is a directory; give a .jsonl file in it, a benchmark name or hub:NAME[:CONFIG]:SPLIT")
    elif spec.endswith(".jsonl") or os.path.isfile(spec):
        rows = read_jsonl(spec)
    else:
        name, _, split = spec.partition(":")
        if name not in BENCHMARKS:
            raise ValueError(f"unknown data {spec!r}: a synthetic split ({', '.join(SPLITS)}), a benchmark "
                             f"({', '.join(BENCHMARKS)}), a .jsonl path, or hub:NAME[:CONFIG]:SPLIT")
        rows = read_jsonl(benchmark_path(name, split or None, data_dir), source=name)
    return rows[:n] if n else rows


def problems_for_cli(spec: str, n_synthetic: int, limit: int | None, seed: int) -> list[Problem]:
    """load_problems for a training script's --data: synthetic splits get n_synthetic problems,
    real data its first `limit` rows; a bad spec or file, or one with no problem, exits with the reason."""
    try:
        problems = load_problems(spec, n=n_synthetic if spec in RECIPES else limit, seed=seed)
    except (ValueError, FileNotFoundError, IsADirectoryError) as e:
        raise SystemExit(f"--data {spec}: {e}") from None
    if not problems:
        raise SystemExit(f"--data {spec}: no problems in it")
    return problems


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


def with_targets(problems: list[Problem], path: str | None, data: str) -> list[Problem]:
    """The problems with their plan and solution texts from the --targets file `path` (read_targets)
    where it has them; a file whose ids match none of them is refused, one that matches only some
    says how many it leaves out."""
    targets = read_targets(path) if path else {}
    unmatched = len(targets.keys() - {p.id for p in problems})
    if targets and unmatched == len(targets):
        raise SystemExit(f"--targets {path}: none of its {len(targets)} ids is a problem of --data {data} "
                         f"(its ids look like {problems[0].id!r}; were the targets written for other data?)")
    if unmatched:
        print(f"--targets {path}: {unmatched} of its {len(targets)} ids match no problem of --data {data}; they "
              f"are not used", file=sys.stderr)
    for p in problems:
        t = targets.get(p.id, {})
        p.plan = t.get("plan", p.plan)
        p.solution = t.get("solution", p.solution)
        if p.solution and ("####" in p.solution or "<<" in p.solution):
            p.solution = clean_solution(p.solution)
    return problems
