"""
The one greedy evaluation of the project, shared by every script that answers problems: the
stages' checks (sft_comt.py, ccrl.py, and what they report of them: greedy_summary), the base's
build figures (base.py) and the tables of evaluate.py. Each problem is answered greedily by the
engine in batches and its completion judged once (rewards.judge_completion); with the base's own
plan header only the plan it writes is judged.
"""
import math
from dataclasses import dataclass

from tqdm import tqdm

from comt.corpus import own_plan_correct, own_plan_program, own_plan_prompt
from comt.engine import stop_ids
from comt.flags import NONNEG_INT, flag
from comt.tasks import comt_target, encode_prompt
from rewards import Judgement, RewardSettings, judge_completion, step_stats


@dataclass(frozen=True)
class Checks:
    """The training stages' greedy checks (their flags): how many problems of which split, how often."""
    eval_n: int = flag(200, "problems of --eval-split per check (0: none)", type=NONNEG_INT)
    eval_split: str = flag("test", "the split the checks answer (val to choose settings on)", choices=("test", "val"))
    eval_every: int = flag(50, "steps between checks (0: at the end only); each check is a log line with the tokens "
                           "spent so far", type=NONNEG_INT)


def prompt_ids(tok, p, gold_plan: bool) -> list[int]:
    """The prompt's token ids; with gold_plan the gold plan and "Solution:" marker follow the question."""
    ids = encode_prompt(tok, p)
    if not gold_plan:
        return ids
    if not p.plan:
        raise SystemExit(f"--gold-plan: problem {p.id} has no plan (the synthetic splits have one)")
    return ids + tok(comt_target(p), add_special_tokens=False)["input_ids"]


def greedy_judgements(engine, tok, problems: list, max_new_tokens: int, gold_plan: bool = False, batch: int = 64,
                      desc: str | None = None, scoring: RewardSettings = RewardSettings()) -> list[Judgement]:
    """Every problem answered greedily by the engine,
    `batch` prompts per call (with gold_plan the prompt also holds the gold plan and "Solution:"),
    each completion judged once (rewards.judge_completion with `scoring`)."""
    prompts = [prompt_ids(tok, p, gold_plan) for p in problems]
    stops = stop_ids(tok, engine.model)
    out = []
    for i in tqdm(range(0, len(prompts), batch), desc=desc, disable=desc is None, leave=False):
        s = engine.generate(prompts[i:i + batch], max_new_tokens=max_new_tokens, greedy=True, stop_tokens=stops)
        out += [judge_completion(tok, *s.completion(r), p, scoring) for r, p in enumerate(problems[i:i + batch])]
    return out


def own_plan_judgements(engine, tok, problems: list, max_new_tokens: int, form: str = "steps", batch: int = 64,
                        desc: str | None = None) -> list[dict]:
    """The base's own plans: every problem prompted greedily under the base's own header for `form`
    (tasks.own_plan_prompt: the question, then e.g. "Steps:"), the plan it writes judged against the
    gold program (tasks.own_plan_correct). One dict per problem: text, plan_correct, steps (the lines
    it wrote that read as steps of that form)."""
    prompts = [tok(own_plan_prompt(p, form))["input_ids"] for p in problems]
    stops, out = stop_ids(tok, engine.model), []
    for i in tqdm(range(0, len(prompts), batch), desc=desc, disable=desc is None, leave=False):
        s = engine.generate(prompts[i:i + batch], max_new_tokens=max_new_tokens, greedy=True, stop_tokens=stops)
        for r, p in enumerate(problems[i:i + batch]):
            text = tok.decode(s.completion(r)[0], skip_special_tokens=True)
            out.append(dict(text=text, plan_correct=own_plan_correct(text, p, form),
                            steps=sum(op != "?" for op, _ in own_plan_program(text, form))))
    return out


def plan_and_step_stats(judged: list[Judgement], threshold: float) -> dict:
    """The share of completions that open with a plan, and step-confidence statistics (rewards.step_stats):
    what a stage logs of its samples and of its greedy checks."""
    return dict(plan_rate=sum(j.plan for j in judged) / len(judged),
                **step_stats([j.step_confs for j in judged], [j.step_rights for j in judged], threshold))


def greedy_summary(judged: list[Judgement], threshold: float = 0.9) -> dict:
    """What both stages' checks report of greedy answers: accuracy, the share that open with a plan,
    the mean completion length, step-confidence statistics."""
    n = len(judged)
    stats = plan_and_step_stats(judged, threshold)
    return dict(acc=sum(j.correct for j in judged) / n, plan_rate=stats.pop("plan_rate"),
                mean_len=sum(j.tokens for j in judged) / n, **stats)


def sample_metrics(step: int, rewards, correct, judged: list[Judgement], kept_groups, completion_tokens: int,
                   stats: dict, norm: float, lr: float, seconds: float, sample_seconds: float, threshold: float,
                   ccrl: bool) -> dict:
    """Stage 2's log line of one step: reward ((P,G) rewards) and accuracy ((P,G) correct) of the
    samples, the groups with no reward spread and those kept, calibration of their steps, and the
    update (stats: its summed clipped and KL per token)."""
    r, c = rewards, correct.float()
    row = dict(step=step, reward=r.mean().item(), acc=c.mean().item(),
               zero_spread=(r.std(1, unbiased=False) == 0).float().mean().item(),
               kept_groups=kept_groups.float().mean().item(), resp_len=completion_tokens / r.numel(),
               **plan_and_step_stats(judged, threshold),
               kl=stats["kl"] / max(stats["tokens"], 1), clip_frac=stats["clipped"] / max(stats["tokens"], 1),
               grad_norm=norm, lr=lr, tokens_per_s=completion_tokens / seconds, sample_s=sample_seconds,
               train_s=seconds - sample_seconds)
    if ccrl:
        row.update(correct_part=c.mean().item(), conf_part=r.mean().item() - c.mean().item())
    return {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in row.items()}


# -----------------------------------------------------------------------------
# Calibration and pass@k (pure functions; the tests check them against hand-computed values)


def ece(confs: list[float], correct: list[bool], bins: int = 10) -> float:
    """Expected calibration error: sum over equal-width bins of (share of items) * |accuracy -
    mean confidence|. Bin i holds confidences in [i/bins, (i+1)/bins); 1.0 goes in the last bin.

    >>> round(ece([0.1, 0.9, 0.95], [False, True, False], bins=2), 4)  # |0-.1|/3 + 2/3 |.5-.925|
    0.3167
    """
    if not confs:
        return float("nan")
    total = 0.0
    for lo, hi, n, acc, conf in reliability(confs, correct, bins):
        total += n * abs(acc - conf)
    return total / len(confs)


def reliability(confs: list[float], correct: list[bool], bins: int = 10) -> list[tuple]:
    """Non-empty bins as (low, high, count, accuracy, mean confidence)."""
    members = [[] for _ in range(bins)]
    for c, z in zip(confs, correct):
        members[min(int(c * bins), bins - 1)].append((c, z))
    return [(i / bins, (i + 1) / bins, len(m), sum(z for _, z in m) / len(m), sum(c for c, _ in m) / len(m))
            for i, m in enumerate(members) if m]


def brier(confs: list[float], correct: list[bool]) -> float:
    """Mean squared difference between confidence and correctness (0 best, 1 worst)."""
    return sum((c - float(z)) ** 2 for c, z in zip(confs, correct)) / len(confs) if confs else float("nan")


def auroc(confs: list[float], correct: list[bool]) -> float:
    """Probability that a random right item has higher confidence than a random wrong one, ties
    counting one half (the Mann-Whitney statistic); nan without both kinds."""
    right = [c for c, z in zip(confs, correct) if z]
    wrong = [c for c, z in zip(confs, correct) if not z]
    if not right or not wrong:
        return float("nan")
    wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are right: 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
