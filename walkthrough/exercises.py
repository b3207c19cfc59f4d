"""
Exercises for the walkthrough: write each function below, then check it against the project's own
code (the oracle) with

    python walkthrough/exercises.py              # checks every exercise, says which pass
    python walkthrough/exercises.py zscore       # one of them

Each `check_<name>` compares your answer with the oracle on fixed and random cases, or reads a run's
log against stated facts; a wrong answer fails with a line saying where. Solutions, for after
class: walkthrough/solutions.py (`python walkthrough/exercises.py --solutions` checks them).
"""
import json
import math
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

BASE = os.path.join(ROOT, "models", "base")


# -----------------------------------------------------------------------------
# The exercises (stubs): replace each `raise NotImplementedError`


def supervised_tokens(tok, problem, fmt: str) -> int:
    """1. How many tokens of the SFT example of `problem` in format `fmt` ("comt" or "cot") carry loss?
    (Section 2.) Then: why is CoMT's count a prefix of CoT's, token for token?"""
    raise NotImplementedError("exercise 1")


def aggregate_confidence(logprobs: list[float], agg: str) -> float:
    """2. The confidence of a number from its tokens' log-probs: geo (geometric mean of the
    probabilities), min, or prod (section 6). Which of the three punishes a long number most?"""
    raise NotImplementedError("exercise 2")


def signed_term(confs: list[float], rights: list[bool], answer_ok: bool, missing: int) -> float:
    """3. The CCRL confidence term T, signed form: the mean over the steps written and the `missing`
    gold steps never reached of +c (a right step of a right answer), 0 (a right step of a wrong
    answer), -c (a wrong step), -1 (a step never reached); -1 when there is nothing to average."""
    raise NotImplementedError("exercise 3")


def zscore(rewards: torch.Tensor) -> torch.Tensor:
    """4. (P,G) rewards -> (P,G) advantages (r - group mean) / (group std + 1e-6), a group with no
    spread getting 0. Which std? Some courses get +-0.866 for the group [1, 0, 0, 1]: why, and what
    does the project get?"""
    raise NotImplementedError("exercise 4")


def kept_by_filter(correct: list[bool]) -> bool:
    """5. Does --filter-groups keep a group whose samples' answers are right/wrong as in `correct`?"""
    raise NotImplementedError("exercise 5")


def all_wrong_but_spread(lam: float) -> list[tuple[bool, float]]:
    """6. A group of four samples, each (correct, T), whose answers are all wrong but whose CCRL
    rewards (correct + lam * T) differ, so that their advantages are not all 0. (What can T be for a
    wrong answer?) What does --filter-groups do with such a group, and why is that a choice?"""
    raise NotImplementedError("exercise 6")


def best_wrong_reward(lam: float, form: str) -> float:
    """7. The largest CCRL reward a completion with a wrong answer can earn, for the signed and the
    brier form (rewards.py's header says why it is what it is)."""
    raise NotImplementedError("exercise 7")


def sft_loss(model, ids: torch.Tensor, sup: torch.Tensor) -> torch.Tensor:
    """8. Stage 1's loss on a batch: ids (B,T), sup (B,T) True where a token is supervised (predicted
    from the tokens before it): the mean cross-entropy over the supervised tokens (section 3)."""
    raise NotImplementedError("exercise 8")


def replay_effect(with_replay_log: str, without_replay_log: str) -> tuple[float, float]:
    """9. Run stage 1 twice, `python sft_comt.py --out runs/ex_replay` and `python sft_comt.py
    --replay 0 --out runs/ex_noreplay` (about a minute each; keep their evaluations: the accuracy is
    in the summary), and return (test accuracy with replay, without) read from their log.jsonl files.
    What did replay protect?"""
    raise NotImplementedError("exercise 9")


def zero_spread_share(log: str) -> float:
    """10. The mean share of groups with no reward spread over a ccrl.py run's steps (its log.jsonl).
    Run stage 2 twice from the same init, `python ccrl.py --reward outcome --steps 40 --eval-n 0
    --out runs/ex_outcome` and the same with `--reward ccrl --out runs/ex_ccrl` (--eval-n 0 skips the
    evaluations this exercise does not read): which has more such groups, and why does that matter?"""
    raise NotImplementedError("exercise 10")


# -----------------------------------------------------------------------------
# The checkers: the project's own functions are the oracles


def base_tok():
    from comt.common import check_checkpoint
    return check_checkpoint(BASE, "base")


def check_supervised_tokens(fn):
    from comt.tasks import encode_example, make_split
    tok = base_tok()
    for p in make_split("train", 5, seed=7) + make_split("ood_steps", 3, seed=7):
        for fmt in ("comt", "cot"):
            want = sum(encode_example(tok, p, fmt)[1])
            assert fn(tok, p, fmt) == want, f"{p.id} {fmt}: {fn(tok, p, fmt)}, the project counts {want}"


def check_aggregate_confidence(fn):
    from rewards import confidence
    rng = random.Random(0)
    cases = [[-0.1], [-0.5, -0.01], [-2.0, -0.2, -0.05]] + [[-rng.random() * 3 for _ in range(rng.randint(1, 5))]
                                                          for _ in range(20)]
    for lps in cases:
        for agg in ("geo", "min", "prod"):
            got, want = fn(lps, agg), confidence(lps, agg)
            assert math.isclose(got, want, rel_tol=1e-9), f"{agg} of {lps}: {got}, the project says {want}"


def check_signed_term(fn):
    from rewards import confidence_term
    rng = random.Random(1)
    cases = [([0.9, 0.6], [True, False], True, 0), ([0.9, 0.6], [True, False], False, 1), ([], [], False, 0),
             ([0.7], [True], False, 2)]
    for _ in range(40):
        k = rng.randint(0, 4)
        cases.append(([rng.random() for _ in range(k)], [rng.random() < 0.5 for _ in range(k)], rng.random() < 0.5,
                      rng.randint(0, 2)))
    for confs, rights, ok, missing in cases:
        got, want = fn(confs, rights, ok, missing), confidence_term(confs, rights, "signed", missing, ok)
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), \
            f"confs {confs}, rights {rights}, answer right {ok}, {missing} missing: {got}, the project says {want}"


def check_zscore(fn):
    from rewards import group_advantages
    g = torch.Generator().manual_seed(0)
    cases = [torch.tensor([[1., 0., 0., 1.]]), torch.tensor([[2., 2., 2.], [0., 1., 0.]]),
             torch.rand(5, 8, generator=g), (torch.rand(3, 6, generator=g) > 0.5).float()]
    for r in cases:
        got, want = fn(r.clone()), group_advantages(r)
        assert torch.allclose(got, want, atol=1e-5), f"rewards {r.tolist()}: {got.tolist()}, project {want.tolist()}"


def check_kept_by_filter(fn):
    from rewards import mixed_groups
    rng = random.Random(2)
    cases = [[True, False], [True, True], [False, False, False]] + [[rng.random() < 0.3 for _ in range(6)]
                                                                     for _ in range(20)]
    for c in cases:
        want = bool(mixed_groups(torch.tensor([c]))[0])
        assert fn(c) == want, f"{c}: {fn(c)}, --filter-groups {'keeps' if want else 'drops'} it"


def check_all_wrong_but_spread(fn):
    from rewards import group_advantages, mixed_groups
    for lam in (0.5, 1.0):
        group = fn(lam)
        assert len(group) == 4 and not any(c for c, _ in group), f"lambda {lam}: four samples, all wrong"
        assert all(-1.0 <= t <= 0.0 for _, t in group), f"lambda {lam}: a wrong answer's T lies in [-1, 0]"
        adv = group_advantages(torch.tensor([[float(c) + lam * t for c, t in group]]))
        assert adv.abs().sum() > 0, f"lambda {lam}: the rewards do not differ, so every advantage is 0"
        assert not mixed_groups(torch.tensor([[c for c, _ in group]]))[0], \
            f"lambda {lam}: --filter-groups should drop an all-wrong group"


def check_best_wrong_reward(fn):
    from rewards import confidence_term
    rng = random.Random(3)
    for form in ("signed", "brier"):
        best = max(confidence_term([rng.random() for _ in range(k)], [rng.random() < 0.5 for _ in range(k)], form,
                                   0, False) for k in range(1, 4) for _ in range(300))
        best = max(best, confidence_term([1.0, 1.0], [True, True], form, 0, False))  # right steps, wrong answer
        for lam in (0.5, 1.0):
            assert math.isclose(fn(lam, form), lam * best, abs_tol=1e-9), \
                f"{form}, lambda {lam}: {fn(lam, form)}; the largest found is {lam * best}"


def check_sft_loss(fn):
    from comt.common import load_model, pad_id
    from comt.tasks import encode_example, make_split
    from comt.training import pad_rows, target_logprobs
    from sft_comt import token_mean_loss
    tok, model = base_tok(), load_model(BASE)
    for fmt in ("comt", "cot"):
        examples = [encode_example(tok, p, fmt) for p in make_split("train", 4, seed=5)]
        ids, sup = pad_rows([e for e, _ in examples], [m for _, m in examples], pad_id(tok))
        want = token_mean_loss(int(sup[:, 1:].sum()))(None, target_logprobs(model, ids, sup), None)[0]
        got = fn(model, ids, sup)
        shifted = shifted_mask_loss(model, ids, sup)
        hint = "" if not torch.allclose(got, shifted, rtol=1e-5) else (
            " (that is the loss with the mask shifted by one: logits at position t predict token t+1, so the mask "
            "of the targets is sup[:, 1:], not sup[:, :-1])")
        assert torch.allclose(got, want, rtol=1e-5), f"{fmt}: {got.item():.5f}, the project's {want.item():.5f}{hint}"


def shifted_mask_loss(model, ids, sup):
    """The off-by-one answer: the mask read at the predicting position instead of the predicted one."""
    ce = torch.nn.functional.cross_entropy(model(ids)[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
    mask = sup[:, :-1].flatten()
    return ce[mask].sum() / mask.sum()


def summary_of(log: str) -> dict:
    with open(log) as f:
        rows = [json.loads(line) for line in f]
    assert rows and rows[-1].get("summary"), f"{log}: not a finished run's log"
    return rows[-1]


def run_args(log: str) -> dict:
    """The arguments the run whose log this is was made with (its checkpoint's training state)."""
    from comt.common import load_train_state
    state = load_train_state(os.path.dirname(os.path.abspath(log)))
    assert state is not None, f"{log}: no checkpoint beside it, so which run made it is unknown"
    return state["args"]


def check_replay_effect(fn, logs=(os.path.join(ROOT, "runs", "ex_replay", "log.jsonl"),
                                  os.path.join(ROOT, "runs", "ex_noreplay", "log.jsonl"))):
    from lab import differing
    from sft_comt import parse_args
    for log in logs:
        assert os.path.isfile(log), f"{log}: run stage 1 first (see the exercise)"
    asked = (vars(parse_args([])), vars(parse_args(["--replay", "0"])))  # the two commands of the exercise
    for log, want in zip(logs, asked):
        other = ", ".join(sorted(differing(run_args(log), want)))
        assert not other, f"{log}: made with other flags ({other}) than the exercise's command"
    with_, without = (summary_of(log) for log in logs)
    assert fn(*logs) == (with_["test_acc"], without["test_acc"]), f"{fn(*logs)}: read test_acc from the summaries"


def check_zero_spread_share(fn, logs=(os.path.join(ROOT, "runs", "ex_outcome", "log.jsonl"),
                                      os.path.join(ROOT, "runs", "ex_ccrl", "log.jsonl"))):
    from lab import differing
    for log in logs:
        assert os.path.isfile(log), f"{log}: run stage 2 first (see the exercise)"
    if len(logs) == 2:
        a, b = (run_args(log) for log in logs)
        assert os.path.realpath(logs[0]) != os.path.realpath(logs[1]), "the same log twice: run stage 2 twice"
        assert (a["reward"], b["reward"]) == ("outcome", "ccrl"), \
            f"the runs have rewards {a['reward']} and {b['reward']}: the first --reward outcome, the second ccrl"
        other = ", ".join(sorted(differing(a, b) - {"reward"}))
        assert not other, f"the two runs differ in {other} too: give them the same init and steps"
    for log in logs:
        with open(log) as f:
            steps = [r for r in map(json.loads, f) if "zero_spread" in r]
        want = sum(r["zero_spread"] for r in steps) / len(steps)
        assert math.isclose(fn(log), want, rel_tol=1e-9), f"{log}: {fn(log)}, the steps' mean is {want}"


EXERCISES = {  # name -> (the stub above, its checker)
    "supervised_tokens": (supervised_tokens, check_supervised_tokens),
    "aggregate_confidence": (aggregate_confidence, check_aggregate_confidence),
    "signed_term": (signed_term, check_signed_term),
    "zscore": (zscore, check_zscore),
    "kept_by_filter": (kept_by_filter, check_kept_by_filter),
    "all_wrong_but_spread": (all_wrong_but_spread, check_all_wrong_but_spread),
    "best_wrong_reward": (best_wrong_reward, check_best_wrong_reward),
    "sft_loss": (sft_loss, check_sft_loss),
    "replay_effect": (replay_effect, check_replay_effect),
    "zero_spread_share": (zero_spread_share, check_zero_spread_share),
}


def main(argv: list[str]):
    import argparse
    ap = argparse.ArgumentParser(description="Check the walkthrough's exercises against the project's code.",
                                 allow_abbrev=False)
    ap.add_argument("names", nargs="*", metavar="name",
                    help=f"exercises to check (default all): {', '.join(EXERCISES)}")
    ap.add_argument("--solutions", action="store_true", help="check walkthrough/solutions.py instead of the stubs")
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in EXERCISES]
    if unknown:
        ap.error(f"no exercise {unknown[0]!r}; choose from {', '.join(EXERCISES)}")
    source = sys.modules[__name__]
    if args.solutions:
        import solutions as source
    for name in args.names or list(EXERCISES):
        try:
            EXERCISES[name][1](getattr(source, name))
            print(f"{name}: pass")
        except NotImplementedError:
            print(f"{name}: not written yet")
        except AssertionError as e:
            print(f"{name}: not yet: {e}")
        except Exception as e:  # an answer of the wrong kind: say so, and check the rest
            print(f"{name}: not yet: it raised {type(e).__name__}: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
