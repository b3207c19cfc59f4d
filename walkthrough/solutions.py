"""
Solutions to walkthrough/exercises.py, each with the answer to its question in the docstring.
Check them with `python walkthrough/exercises.py --solutions`.
"""
import json
import math

import torch
import torch.nn.functional as F


def supervised_tokens(tok, problem, fmt: str) -> int:
    """CoMT supervises the plan and the "Solution:" marker; CoT the same tokens, then the execution,
    the answer and the stop token: both encode the plan text alone first, so CoMT's target is a
    prefix of CoT's, token for token, and the arms differ only in whether execution is supervised."""
    from comt.tasks import comt_target, cot_text
    target = tok(comt_target(problem), add_special_tokens=False)["input_ids"]
    if fmt == "comt":
        return len(target)
    execution = cot_text(problem).removeprefix(comt_target(problem))
    return len(target) + len(tok(execution, add_special_tokens=False)["input_ids"]) + 1  # + the stop token


def aggregate_confidence(logprobs: list[float], agg: str) -> float:
    """prod multiplies every token's probability, so a long number is punished most; geo is the
    per-token average (independent of length), min the weakest token."""
    if not logprobs:
        return 0.0
    if agg == "geo":
        return math.exp(sum(logprobs) / len(logprobs))
    if agg == "min":
        return math.exp(min(logprobs))
    return math.exp(sum(logprobs))


def signed_term(confs: list[float], rights: list[bool], answer_ok: bool, missing: int) -> float:
    terms = [(c if answer_ok else 0.0) if right else -c for c, right in zip(confs, rights)] + [-1.0] * missing
    return sum(terms) / len(terms) if terms else -1.0


def zscore(rewards: torch.Tensor) -> torch.Tensor:
    """The population std (divide by G): [1, 0, 0, 1] has std 0.5 and advantages +-1. The sample std
    (divide by G - 1, torch's default) is 0.577 and gives +-0.866: a scale, not a direction, but the
    learning rate then means something else."""
    centred = rewards - rewards.mean(1, keepdim=True)
    std = rewards.std(1, unbiased=False, keepdim=True)
    return torch.where(std > 0, centred / (std + 1e-6), torch.zeros_like(centred))


def kept_by_filter(correct: list[bool]) -> bool:
    return any(correct) and not all(correct)


def all_wrong_but_spread(lam: float) -> list[tuple[bool, float]]:
    """A wrong answer's T lies in [-1, 0]: right steps count 0, wrong ones -c, missing ones -1. Four
    wrong answers whose steps differ in confidence get different rewards, so GRPO would push the
    less confident wrong answers up: a gradient from the confidence term alone. --filter-groups keeps
    only groups with right and wrong answers (by correctness), so it drops this group: a choice
    between learning calibration from all-wrong groups and not chasing a phantom signal."""
    return [(False, 0.0), (False, -0.2), (False, -0.6), (False, -1.0)]


def best_wrong_reward(lam: float, form: str) -> float:
    """0 in both forms: signed, a right step of a wrong answer counts 0 and every other step less;
    brier, -(c - z)^2 is at most 0. So no wrong answer earns more than a bare 0: stopping early or
    writing confident partial work never pays."""
    return 0.0


def sft_loss(model, ids: torch.Tensor, sup: torch.Tensor) -> torch.Tensor:
    logits = model(ids)[:, :-1]  # (B,T-1,V): position t predicts token t+1
    ce = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none").view(ids.shape[0], -1)
    target = sup[:, 1:]
    return ce[target].sum() / target.sum()


def final_summary(log: str) -> dict:
    with open(log) as f:
        return [json.loads(line) for line in f][-1]


def replay_effect(with_replay_log: str, without_replay_log: str) -> tuple[float, float]:
    """Without replay, 100 steps on plans alone teach "after a plan line comes another plan line" and
    the base's execution is lost: the plans are still written (plan rate 100%), the answers are not
    (82% -> 4.5% of 200 test problems on the shipped base, seed 0)."""
    return final_summary(with_replay_log)["test_acc"], final_summary(without_replay_log)["test_acc"]


def zero_spread_share(log: str) -> float:
    """Outcome rewards are 0 or 1, so every group that is all right or all wrong has no spread and
    teaches nothing; CCRL's confidence term separates samples of equal correctness, so far fewer
    groups are flat. GRPO learns only from groups with spread."""
    with open(log) as f:
        steps = [r for r in map(json.loads, f) if "zero_spread" in r]
    return sum(r["zero_spread"] for r in steps) / len(steps)
