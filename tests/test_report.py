"""comt/report.py: the tables and the reading are generated from the numbers (hand-made results)."""
from comt.report import (cost_sentences, kept_sentences, kept_table, label, own_part, pipeline_curve, pipeline_shared, reach,
                         reach_table, reading_lines)
from comt.stats import POOLED


def claim(key, metric, split, mean, low, high, what="x"):
    return dict(claim=f"{what}, {metric}", key=key, split=split, metric=metric, expected="higher", per_seed=[mean],
                mean=mean, low=low, high=high)


def test_arm_labels():
    assert (label("comt_ccrl"), label("cot_sft"), label("cot_grpo")) == ("CoMT-SFT + CCRL", "CoT-SFT", "CoT-SFT + GRPO")


def test_the_reading_is_generated_from_the_claims():
    """A difference whose interval covers 0 reads "within noise", one that excludes it "higher"; the
    reward's effect and the SFT target's effect are read from the same init and under the same reward."""
    found = [claim("pipeline", "acc", "test", 0.02, -0.03, 0.07), claim("reward_comt", "acc", "test", 0.05, 0.01, 0.09),
             claim("target_grpo", "acc", POOLED, -0.04, -0.08, -0.01)]
    for metric in ("overconf_err", "step_err", "wrong_conf", "step_auroc"):
        found.append(claim("reward_cot", metric, "test", -0.01, -0.02, 0.005))
    text = "\n".join(reading_lines(found, ["stage 1 costs less."]))
    assert ("**Accuracy in distribution** (`test`; the paper: CoMT + CCRL above CoT-SFT + RL, by 2.19 points on "
            "average): CoMT-SFT + CCRL minus CoT-SFT + GRPO +2.0 [-3.0, +7.0] (within noise); the reward from the "
            "same init, CCRL minus GRPO: from CoMT-SFT +5.0 [+1.0, +9.0] (higher).") in text
    assert ("the SFT target under the same reward, CoMT-SFT minus CoT-SFT: then GRPO -4.0 [-8.0, -1.0] (lower)."
            in text)
    assert "step AUROC (does a step's confidence tell right from wrong; 50 is chance) from CoT-SFT -1.0 [-2.0, +0.5] " \
           "(within noise)." in text
    assert text.endswith("**Training cost** (the paper: about half the SFT tokens and 65-70% less training time): "
                         "stage 1 costs less.")


def test_what_post_training_kept_is_set_against_the_base():
    arm = lambda plans, acc: {s: dict(plan_correct=[plans, plans], acc=[acc, acc]) for s in ("test", "ood_steps")}
    ev = dict(cot_sft=arm(0.2, 0.1), comt_sft=arm(0.4, 0.3))
    base = dict(base_own={"test": dict(plan_correct=0.9), "ood_steps": dict(plan_correct=0.8)},
                base_plan={"test": dict(acc=0.95), "ood_steps": dict(acc=0.7)})
    text = "\n".join(kept_table(ev, base, ["test", "ood_steps"]) + kept_sentences(ev, base, ["test", "ood_steps"]))
    assert "| base | 80 / 70 |" in text and "| cot_sft | 20 (25% kept) / 10 |" in text
    assert "| comt_sft | 40 (50% kept) / 30 |" in text
    assert "`ood_steps`: the base plans 80% right in its own words; the arms plan 20-40% right (most comt_sft, least " \
           "cot_sft): every arm lost part of the base's planning." in text


def test_the_cost_to_reach_a_share_of_val_is_read_off_the_curves():
    """Two seeds of one pipeline: seed 0 passes 85% at its second check (1.2M tokens), seed 1 at its third
    (2.0M); 90% only seed 1, at its third. The SFT arms' token counts are read as given."""
    point = lambda acc, tokens, seconds: dict(acc=acc, tokens=tokens, train_tokens=tokens // 2, seconds=seconds)
    curves = {"comt_ccrl": [[point(0.8, 1e5, 10), point(0.86, 1.2e6, 100), point(0.88, 2e6, 200)],
                            [point(0.7, 1e5, 10), point(0.8, 1.2e6, 100), point(0.92, 2e6, 200)]]}
    assert reach(curves["comt_ccrl"][0], 0.85)["tokens"] == 1.2e6 and reach(curves["comt_ccrl"][0], 0.9) is None
    table = "\n".join(reach_table(curves, {"comt_ccrl": [False, True]}))
    assert "| CoMT-SFT + CCRL | 85% | 1.60M ± 565.7k | 800.0k ± 282.8k | 150 ± 71 (shared) | 2 of 2 |" in table
    assert "| CoMT-SFT + CCRL | 90% | 2.00M | 1.00M | 200 (shared) | 1 of 2 |" in table
    said = " ".join(cost_sentences(curves, dict(comt_sft=[500, 500], cot_sft=[1000, 1000]),
                                   dict(comt_sft=[2000, 2000], cot_sft=[2500, 2500])))
    assert "CoMT targets supervises 500 tokens against CoT's 1,000 (-50%" in said
    assert "runs 2.0k tokens through training against 2.5k (-20%" in said
    assert "until `val` first reached 85%: CoMT-SFT + CCRL 1.60M (2 of 2 seeds)" in said
    assert "until `val` first reached 90%: CoMT-SFT + CCRL 2.00M (1 of 2 seeds)" in said


def test_a_pipeline_curve_carries_its_sft_stage_counts_over():
    """An RL stage's checks count from its SFT stage's totals (tokens: trained + forward only; seconds),
    its check before the first step (the SFT model again) left out; a shared stage marks its pipeline;
    the chart draws the RL part from the SFT stage's last check when the SFT stage has its own line."""
    check = lambda step, acc, train, fwd, sec: dict(step=step, acc=acc, train_tokens=train, forward_tokens=fwd,
                                                    seconds=sec)
    stages = dict(sft=dict(curve=[check(0, 0.1, 0, 0, 0.0), check(10, 0.5, 400, 0, 20.0)], train_tokens=500,
                           forward_tokens=0, train_seconds=25.0, shared_machine=True),
                  rl=dict(curve=[check(0, 0.5, 0, 0, 0.0), check(5, 0.7, 100, 30, 8.0)]))
    parents = dict(sft=None, rl="sft")
    curve = pipeline_curve(stages, "rl", parents)
    assert [(p["stage"], p["step"], p["tokens"], p["train_tokens"], p["seconds"]) for p in curve] == [
        ("sft", 0, 0, 0, 0.0), ("sft", 10, 400, 400, 20.0), ("rl", 5, 500 + 130, 500 + 100, 33.0)]
    assert pipeline_shared(stages, "rl", parents) and not pipeline_shared(dict(sft={}, rl={}), "rl", parents)
    assert own_part(curve, "rl", {"sft": [], "rl": []}) == curve[1:] and own_part(curve, "rl", {"rl": []}) == curve


def test_no_paired_differences_say_so():
    from comt.report import documents
    ev = {"comt_sft": {"test": {k: [0.5] for k in ("acc", "acc_lenient", "overconf_err", "plan_correct",
                                                   "plan_followed", "wrong_plan", "not_followed", "executed_wrongly",
                                                   "ece", "step_acc", "first_wrong_conf", "step_auroc", "plan_rate")}}}
    costs = {"comt_sft": {k: [1.0] for k in ("sup_tokens", "sup_tokens_per_example", "train_tokens", "forward_tokens",
                                             "train_seconds", "wall_seconds", "shared_machine")}}
    md, readme = documents(dict(eval=ev, costs=costs), {}, [], [0], "python experiment.py --arms comt_sft",
                           dict(comt_sft=[[]]), dict(comt_sft=[False]))
    assert "No paired differences" in readme and "| comparison |" not in readme
