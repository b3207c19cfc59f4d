import json
import math
import os
import shutil
import subprocess

import pytest
import torch

import ccrl
from ccrl import Update, kl_estimate, make_batches, policy_loss
from comt.common import load_model
from comt.lifecycle import STOPPED, fingerprint
from comt.training import target_logprobs
from conftest import COMMON, RL, SMALL, log_rows, run_ccrl, run_sft, stopped, tiny_model, torchrun, tree_digest

ROOT = __file__.rsplit("/tests/", 1)[0]
TEMPERATURE, U = 0.7, Update(clip_low=0.2, clip_high=0.28)  # policy_loss settings


def loss_of(model, b):
    """policy_loss of one micro-batch, its log-probs computed as training.update computes them."""
    return policy_loss(b, target_logprobs(model, b.ids, b.mask, TEMPERATURE), None, U)


def samples(vocab, n=5, seed=0):
    """n (prompt + completion) sequences of different lengths and their prompt lengths."""
    g = torch.Generator().manual_seed(seed)
    seqs, plens = [], []
    for i in range(n):
        p, c = 3 + i % 3, 2 + (2 * i) % 5
        seqs.append(torch.randint(3, vocab, (p + c,), generator=g).tolist())
        plens.append(p)
    return seqs, plens


def grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def implemented_grad(model, seqs, plens, adv, agg, micro, max_new=8):
    model.zero_grad()
    n_tok = sum(len(s) - p for s, p in zip(seqs, plens))
    for b in make_batches(seqs, plens, adv, agg, max_new, micro, pad=0, totals=(n_tok, len(seqs))):
        loss, _ = loss_of(model, b)
        loss.backward()
    return grads(model)


def test_gradient_equals_hand_written_policy_gradient_for_a_two_sample_group():
    model = tiny_model(50)
    seqs, plens = samples(50, n=2)
    adv = [1.0, -1.0]  # z-scored rewards (1, 0) of a group of two
    got = implemented_grad(model, seqs, plens, adv, "token", micro=2)
    # reference: -(1 / all completion tokens) * sum_i A_i * sum_t log softmax(logits / T)[y_t], one sequence at a time
    model.zero_grad()
    n_tok = sum(len(s) - p for s, p in zip(seqs, plens))
    total = 0.0
    for s, p, a in zip(seqs, plens, adv):
        logits = model(torch.tensor([s]))[0] / TEMPERATURE
        for t in range(p, len(s)):
            total = total - a * torch.log_softmax(logits[t - 1], -1)[s[t]] / n_tok
    total.backward()
    torch.testing.assert_close(got, grads(model), atol=1e-6, rtol=1e-4)
    assert got.abs().sum() > 0


@pytest.mark.parametrize("agg", ["token", "seq", "const"])
def test_micro_batch_split_does_not_change_the_update(agg):
    model = tiny_model(50)
    seqs, plens = samples(50, n=5)
    adv = [0.5, -1.2, 0.3, 1.0, -0.6]
    full = implemented_grad(model, seqs, plens, adv, agg, micro=5)
    for micro in (1, 2, 3):
        torch.testing.assert_close(implemented_grad(model, seqs, plens, adv, agg, micro), full, atol=1e-7, rtol=1e-5)


def test_micro_batches_group_similar_lengths():
    # rows alternate long/short: in sample order every pair of 2 would pad to the long one
    seqs = [[1] * n for n in (20, 4, 19, 5, 18, 6)]
    plens = [2] * 6
    batches = make_batches(seqs, plens, [1.0] * 6, "token", 32, 2, pad=0, totals=(sum(map(len, seqs)) - 12, 6))
    assert sum(b.ids.numel() for b in batches) == 2 * (5 + 18 + 20)  # (4,5) (6,18) (19,20)
    assert sorted(int(b.mask.sum()) for b in batches) == sorted([2 + 3, 4 + 16, 17 + 18])


@pytest.mark.parametrize("agg", ["token", "seq", "const"])
def test_zero_advantage_rows_can_be_left_out(agg):
    # ccrl.py does not run rows with advantage 0 (no KL); the totals still count them
    model = tiny_model(50)
    seqs, plens = samples(50, n=5)
    adv = [0.0, 1.1, 0.0, -1.1, 0.0]
    totals = (sum(len(s) - p for s, p in zip(seqs, plens)), len(seqs))

    def grad(rows):
        model.zero_grad()
        for b in make_batches([seqs[r] for r in rows], [plens[r] for r in rows], [adv[r] for r in rows], agg, 8, 2,
                              pad=0, totals=totals):
            loss_of(model, b)[0].backward()
        return grads(model)
    torch.testing.assert_close(grad([1, 3]), grad(range(5)), atol=1e-7, rtol=1e-5)


def test_aggregation_weights_by_hand():
    seqs, plens = [[1, 2, 3, 4], [1, 2, 3, 4, 5, 6]], [2, 2]  # completions of 2 and 4 tokens
    w = lambda agg: [x for b in make_batches(seqs, plens, [1, 1], agg, 10, 2, 0, (6, 2)) for x in b.weight.tolist()]
    assert w("token") == pytest.approx([1 / 6, 1 / 6])
    assert w("seq") == pytest.approx([1 / 4, 1 / 8])  # 1 / (len * sequences)
    assert w("const") == pytest.approx([1 / 20, 1 / 20])  # 1 / (sequences * max_new)


def test_on_policy_ratio_is_exactly_one_and_epochs_reuse_old_logprobs():
    model = tiny_model(50)
    seqs, plens = samples(50, n=3)
    b = make_batches(seqs, plens, [1.0, -1.0, 0.5], "token", 8, 3, 0, (sum(len(s) - p for s, p in zip(seqs, plens)), 3))[0]
    seen = {}
    orig_exp = torch.exp

    def spy(x):
        out = orig_exp(x)
        seen["ratio"] = out.detach()
        return out
    torch.exp = spy
    try:
        loss_of(model, b)
    finally:
        torch.exp = orig_exp
    assert torch.equal(seen["ratio"], torch.ones_like(seen["ratio"]))
    # with stored old log-probs from before an update, the ratio moves and clipping can engage
    b.old_logp = target_logprobs(model, b.ids, b.mask, TEMPERATURE).detach()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    _, stats = loss_of(model, b)
    assert stats["clipped"] > 0


def test_kl_estimators_match_exact_kl():
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    q = torch.tensor([0.25, 0.25, 0.25, 0.25])
    exact = (p * (p / q).log()).sum().item()  # 0.2336...
    x = torch.multinomial(p, 200_000, replacement=True, generator=g)
    logp, logq = p.log()[x], q.log()[x]
    for kind in ("k1", "k3"):
        est = kl_estimate(logp, logq, kind)
        assert est.mean().item() == pytest.approx(exact, abs=4 * est.std().item() / math.sqrt(len(x)) + 1e-4)
    assert (kl_estimate(logp, logq, "k3") >= 0).all()


@pytest.mark.cli
def test_run_logs_metrics_and_resumes_exactly(model_dir, tmp_path):
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    run_ccrl(["--init", model_dir, "--out", full, *SMALL, "--kl-coef", "0.1", "--ppo-epochs", "2"])
    rows = log_rows(full)
    steps = [r for r in rows if "reward" in r and "summary" not in r]
    assert len(steps) == 4 and {"reward", "acc", "zero_spread", "conf_right", "overconf_err", "kl", "clip_frac",
                                "grad_norm", "tokens_per_s", "sample_s", "train_s"} <= steps[0].keys()
    assert [r["step"] for r in rows if r.get("eval")] == [0, 2, 4]
    assert rows[-1]["summary"] and "acc_after" in rows[-1]
    run_ccrl(["--init", model_dir, "--out", cut, *SMALL, "--kl-coef", "0.1", "--ppo-epochs", "2", "--stop-at", "2"],
             expect=STOPPED)
    run_ccrl(["--out", cut, "--resume"])
    timing = ("_s", "seconds", "share")
    strip = lambda rs: [{k: v for k, v in r.items() if not k.endswith(timing)} for r in rs]
    resumed = log_rows(cut)
    assert json.dumps(strip(resumed[:-1])) == json.dumps(strip(rows[:-1]))  # as text: nan equals nan
    assert resumed[-1]["acc_after"] == rows[-1]["acc_after"]


@pytest.mark.cli
def test_missing_init_is_a_clear_error(tmp_path):
    r = run_ccrl(["--init", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")], check=False)
    assert r.returncode != 0 and "not a checkpoint directory" in r.stderr


@pytest.mark.cli
def test_non_finite_gradient_stops_before_the_update(model_dir, tmp_path):
    from safetensors.torch import load_file, save_file
    init, out = tmp_path / "init", str(tmp_path / "o")
    shutil.copytree(model_dir, init)
    run_ccrl(["--init", str(init), "--out", out, *SMALL, "--kl-coef", "0.1", "--stop-at", "1"], expect=STOPPED)
    before = open(os.path.join(out, "model.safetensors"), "rb").read()
    weights = load_file(init / "model.safetensors")  # the KL reference (the initial policy) turns NaN
    weights = {k: v.fill_(float("nan")) if "norm" in k else v for k, v in weights.items()}
    save_file(weights, init / "model.safetensors", metadata={"format": "pt"})
    state = torch.load(os.path.join(out, "train_state.pt"), weights_only=True)  # as if it had started from it
    state["checks"]["reference"] = fingerprint(load_model(str(init)))
    torch.save(state, os.path.join(out, "train_state.pt"))
    r = run_ccrl(["--out", out, "--resume"], check=False)
    assert r.returncode != 0 and "non-finite gradient" in r.stderr and "stopping before the update" in r.stderr
    assert open(os.path.join(out, "model.safetensors"), "rb").read() == before


@pytest.mark.parametrize("epochs,kl", [(1, 0.0), (2, 0.0), (2, 0.1)])
def test_update_counts_the_tokens_it_runs(epochs, kl):
    """Rows 0 and 2 of four are kept (5 and 6 tokens, prompts included): each epoch trains 11 tokens;
    more than one epoch adds a forward for the old log-probs, KL one reference forward per epoch."""
    import argparse
    import copy

    from ccrl import Kept, Rollout, Run, Sampling, policy_update
    from comt.parallel import Dist
    from comt.training import Schedule
    from rewards import RewardSettings
    model = tiny_model(50)
    seqs, plens = [[3] * 5, [4] * 7, [5] * 6, [6] * 4], [2, 2, 3, 3]
    run = Run(args=argparse.Namespace(out="unused"), dist=Dist(), device=torch.device("cpu"), tok=None, model=model,
              opt=torch.optim.SGD(model.parameters(), lr=0.1), schedule=Schedule(), sampling=Sampling(max_new_tokens=8),
              scoring=RewardSettings(), update=Update(micro_batch=4, ppo_epochs=epochs, kl_coef=kl), pad=0,
              ref=copy.deepcopy(model) if kl else None)
    ro = Rollout(seqs, plens, [], 2, 5, 12, [])
    kept = Kept(torch.ones(2, dtype=torch.bool), [0, 2], [1.0, -1.0], (6.0, 4.0))
    stats, _ = policy_update(run, ro, kept, step=0)
    assert stats["train_tokens"] == 11 * epochs
    assert stats["forward_tokens"] == 11 * ((epochs > 1) + (epochs if kl else 0))


@pytest.mark.cli
def test_token_counts_of_a_tiny_run_equal_a_hand_count(model_dir, tok, tmp_path):
    """Each step's prompt tokens, counted here from the step's problems (each prompt prefilled once),
    and the sampled tokens (resp_len x samples) are the logged ones; the checks and the summary carry
    the running totals of everything a step runs."""
    import ccrl
    from comt.tasks import encode_prompt, make_split
    out = str(tmp_path / "o")
    ccrl.main(["--init", model_dir, "--out", out, *SMALL, "--eval-split", "val", "--kl-coef", "0.1"])
    rows = log_rows(out)
    problems = make_split("train", 32)
    steps = [r for r in rows if "reward" in r and "summary" not in r]
    for r in steps:
        idx = ccrl.step_problems(r["step"], 32, 2, 0)
        assert r["prompt_tokens"] == sum(len(encode_prompt(tok, problems[i])) for i in idx)
        assert r["sampled_tokens"] == round(r["resp_len"] * 2 * 3)
        assert r["update_forward_tokens"] == r["train_tokens"]  # KL: one reference forward of every trained row
    total = lambda k, upto=4: sum(r[k] for r in steps if r["step"] < upto)
    forward = lambda upto=4: total("prompt_tokens", upto) + total("sampled_tokens", upto) + \
        total("update_forward_tokens", upto)
    checks = [r for r in rows if r.get("eval")]
    assert [(r["step"], r["split"], r["train_tokens"], r["forward_tokens"]) for r in checks] == \
        [(s, "val", total("train_tokens", s), forward(s)) for s in (0, 2, 4)]
    assert rows[-1]["train_tokens"] == total("train_tokens") > 0 and rows[-1]["forward_tokens"] == forward()


@pytest.mark.cli
def test_step_logs_describe_every_rank(model_dir, tmp_path):
    """At a near-zero temperature the samples do not depend on how the prompts are split over ranks,
    so the logged statistics of 2 ranks equal one process's (each rank logged its own share before)."""
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    flags = [*SMALL, "--temperature", "1e-4", "--prompts-per-step", "4", "--eval-n", "0", "--steps", "2",
             "--init", model_dir]
    run_ccrl([*flags, "--out", one])
    res = subprocess.run([*torchrun(), "ccrl.py", *flags, "--out", two], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-3000:]
    keys = ("reward", "acc", "zero_spread", "kept_groups", "resp_len", "plan_rate", "conf_right", "conf_wrong",
            "overconf_err", "correct_part", "conf_part")
    rows = lambda out: [{k: r.get(k) for k in keys} for r in log_rows(out) if "step" in r and "reward" in r]
    assert rows(one) == rows(two) and len(rows(one)) == 2
    sft1, sft2 = str(tmp_path / "s1"), str(tmp_path / "s2")
    run_sft(["--model", model_dir, "--out", sft1, *COMMON])
    run_sft(["--model", model_dir, "--out", sft2, *COMMON], launcher=torchrun())
    shares = lambda out: [r["pad_share"] for r in log_rows(out) if "step" in r and "loss" in r]
    assert len(shares(sft2)) == len(shares(sft1)) and all(0 <= s < 0.5 for s in shares(sft2))  # every rank's rows


def test_a_changed_kl_reference_is_refused_on_resume(model_dir, tmp_path):
    init, out = tmp_path / "init", str(tmp_path / "o")
    shutil.copytree(model_dir, init)
    stopped(ccrl.main, ["--init", str(init), "--out", out, *RL, "--kl-coef", "0.1", "--stop-at", "1"])
    from safetensors.torch import load_file, save_file
    weights = {k: v * 1.01 for k, v in load_file(init / "model.safetensors").items()}
    save_file(weights, init / "model.safetensors", metadata={"format": "pt"})
    before = tree_digest(out)
    with pytest.raises(SystemExit, match="KL reference model .* changed"):
        ccrl.main(["--out", out, "--resume"])
    assert tree_digest(out) == before
