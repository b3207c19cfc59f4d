"""
The one greedy evaluation of the project, shared by every script that answers problems: the
stages' checks on `test` (sft_comt.py, ccrl.py), the base's build figures (base.py) and the tables
of evaluate.py. Each problem is answered greedily by the engine in batches and its completion judged
once (rewards.judge_completion); with the base's own plan header only the plan it writes is judged.
"""
from tqdm import tqdm

from comt.engine import stop_ids
from comt.tasks import comt_target, encode_prompt, own_plan_correct, own_plan_program, own_plan_prompt
from rewards import Judgement, RewardSettings, judge_completion


def prompt_ids(tok, p, gold_plan: bool) -> list[int]:
    """The prompt's token ids; with gold_plan the gold plan and "Solution:" marker follow the question."""
    ids = encode_prompt(tok, p)
    if not gold_plan:
        return ids
    if not p.plan:
        raise SystemExit(f"--gold-plan: problem {p.id} has no plan (the synthetic splits have one)")
    return ids + tok(comt_target(p), add_special_tokens=False)["input_ids"]


def greedy_judgements(engine, tok, problems: list, max_new_tokens: int, gold_plan: bool = False, batch: int = 64,
                      desc: str | None = None, settings: RewardSettings = RewardSettings()) -> list[Judgement]:
    """Every problem answered greedily by the engine,
    `batch` prompts per call (with gold_plan the prompt also holds the gold plan and "Solution:"),
    each completion judged once (rewards.judge_completion with `settings`)."""
    prompts = [prompt_ids(tok, p, gold_plan) for p in problems]
    stops = stop_ids(tok, engine.model)
    out = []
    for i in tqdm(range(0, len(prompts), batch), desc=desc, disable=desc is None, leave=False):
        s = engine.generate(prompts[i:i + batch], max_new_tokens=max_new_tokens, greedy=True, stop_tokens=stops)
        out += [judge_completion(tok, *s.completion(r), p, settings) for r, p in enumerate(problems[i:i + batch])]
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
