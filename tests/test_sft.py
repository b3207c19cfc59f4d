import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_model
from comt.lifecycle import STOPPED
from comt.model import Transformer
from comt.training import Dist, Run
from sft_comt import collate, train_step
from comt.tasks import Problem, encode_example, make_split

ROOT = __file__.rsplit("/tests/", 1)[0]
PROBLEM = Problem(id="h1", question="Mia has 3 bags with 4 apples in each bag. How many apples?", answer="12",
                  plan="First, multiply the number of bags by the apples per bag to get the apples.\n"
                       "The answer is the apples.", solution="apples = 3 * 4 = 12")


def supervised_text(tok, ids, sup):
    return tok.decode([t for t, s in zip(ids, sup) if s]), tok.decode([t for t, s in zip(ids, sup) if not s])


def test_meta_mask_is_plan_and_marker_only(tok):
    ids, sup = encode_example(tok, PROBLEM, "comt")
    target, rest = supervised_text(tok, ids, sup)
    assert target == f"Plan:\n{PROBLEM.plan}\nSolution:\n"
    assert rest == f"Question: {PROBLEM.question}\n"
    assert sup == sorted(sup)  # prompt first, then the target: nothing supervised after the marker
    assert tok.eos_token_id not in ids and "3 * 4" not in tok.decode(ids)


def test_cot_target_is_the_meta_target_plus_the_execution(tok, chat_tok):
    for t, stop in ((tok, "<|endoftext|>"), (chat_tok, "<|im_end|>")):
        meta_ids, meta_sup = encode_example(t, PROBLEM, "comt")
        ids, sup = encode_example(t, PROBLEM, "cot")
        assert ids[:len(meta_ids)] == meta_ids and sup[:len(meta_sup)] == meta_sup  # CoMT's tokens are CoT's prefix
        target, rest = supervised_text(t, ids, sup)
        meta_target, meta_rest = supervised_text(t, meta_ids, meta_sup)
        assert rest == meta_rest
        assert target == meta_target + "apples = 3 * 4 = 12\nAnswer: 12" + stop
        assert ids[-1] == t.eos_token_id and all(sup[len(meta_ids):])
        assert sum(meta_sup) < sum(sup)


def test_chat_template_masks_the_user_turn(chat_tok):
    for fmt, end in (("comt", "Solution:\n"), ("cot", "Answer: 12<|im_end|>")):
        ids, sup = encode_example(chat_tok, PROBLEM, fmt)
        target, rest = supervised_text(chat_tok, ids, sup)
        assert rest == f"<|im_start|>user\nQuestion: {PROBLEM.question}<|im_end|>\n<|im_start|>assistant\n"
        assert target.startswith("Plan:\n") and target.endswith(end)
        assert sup == sorted(sup)


def loss_by_hand(model, examples, pad_id):
    """Mean token cross-entropy over supervised tokens, one example at a time."""
    total, n = 0.0, 0
    for ids, sup in examples:
        logits = model(torch.tensor([ids]))[0, :-1]
        for t in range(len(ids) - 1):
            if sup[t + 1]:
                total -= torch.log_softmax(logits[t], -1)[ids[t + 1]]
                n += 1
    return total / n


def test_loss_is_token_mean_and_accumulation_does_not_change_the_step(tok):
    examples = [encode_example(tok, p, "cot") for p in make_split("train", 8)]
    n_sup = sum(sum(s[1:]) for _, s in examples)
    params = []
    for micro_size in (8, 4, 3):
        model = tiny_model(len(tok))
        want = loss_by_hand(model, examples, tok.pad_token_id).item()
        opt = torch.optim.SGD(model.parameters(), lr=1.0)  # the update is the gradient (Adam's first step is not)
        micro = [collate(examples[i:i + micro_size], tok.pad_token_id) for i in range(0, 8, micro_size)]
        run = Run(args=None, dist=Dist(), device=torch.device("cpu"), tok=None, model=model, opt=opt)
        loss, _ = train_step(run, micro, n_sup, grad_clip=1e9)
        assert loss == pytest.approx(want, rel=1e-5)
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert not torch.equal(params[0], torch.cat([p.detach().flatten() for p in tiny_model(len(tok)).parameters()]))
    for p in params[1:]:
        torch.testing.assert_close(p, params[0], atol=1e-6, rtol=1e-5)


def test_length_groups_split_where_padding_costs_more_than_a_micro_batch():
    from comt.training import length_groups
    # sorted 91 130 130 131 | 235: padded cells 4*131 + 235 plus two longest rows (1229) beat
    # one micro-batch (5*235 + 235 = 1410) and three (91 + 3*131 + 235 + 3*235 = 1424)
    assert length_groups([235, 130, 91, 131, 130], 8) == [[2, 1, 4, 3], [0]]
    assert length_groups([235, 130, 91, 131, 130], 2) == [[2, 1], [4, 3], [0]]
    assert length_groups([5, 5, 5, 5], 8) == [[0, 1, 2, 3]]
    assert length_groups([7], 1) == [[0]]


def test_padding_does_not_change_the_loss(tok):
    examples = [encode_example(tok, p, "comt") for p in make_split("train", 3)]
    model = tiny_model(len(tok))
    n_sup = sum(sum(s[1:]) for _, s in examples)
    from sft_comt import micro_loss_sum
    batched = micro_loss_sum(model, collate(examples, tok.pad_token_id)).item() / n_sup
    assert batched == pytest.approx(loss_by_hand(model, examples, tok.pad_token_id).item(), rel=1e-5)


def run_sft(args, check=True, launcher=(sys.executable,), expect=0):
    """sft_comt.py in a subprocess; with check, its exit status must be `expect` (STOPPED: stopped early)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([*launcher, "sft_comt.py", *args], cwd=ROOT, capture_output=True, text=True, env=env)
    assert not check or res.returncode == expect, f"sft_comt.py: exit {res.returncode}:\n{res.stdout[-2000:]}\n" \
                                                  f"{res.stderr[-3000:]}"
    return res


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def logged_losses(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}


COMMON = ["--n-train", "48", "--batch", "8", "--micro-batch", "4", "--steps", "6", "--warmup", "2", "--log-every", "1",
          "--eval-n", "0", "--lr", "3e-3"]


@pytest.mark.cli
def test_resume_continues_exactly(model_dir, tmp_path):
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    run_sft(["--model", model_dir, "--out", full, *COMMON])
    run_sft(["--model", model_dir, "--out", cut, *COMMON, "--stop-at", "3"], expect=STOPPED)
    assert max(logged_losses(cut)) == 2
    run_sft(["--out", cut, "--resume"])
    assert logged_losses(cut) == logged_losses(full)
    a, b = Transformer.from_pretrained(full), Transformer.from_pretrained(cut)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.cli
def test_two_rank_ddp_matches_one_process(model_dir, tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    run_sft(["--model", model_dir, "--out", one, *COMMON])
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()))
    run_sft(["--model", model_dir, "--out", two, *COMMON], launcher=torchrun)
    l1, l2 = logged_losses(one), logged_losses(two)
    assert l1.keys() == l2.keys() and all(abs(l1[k] - l2[k]) < 1e-4 for k in l1)
    a, b = Transformer.from_pretrained(one), Transformer.from_pretrained(two)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


@pytest.mark.cli
def test_bad_inputs_give_clear_errors(model_dir, tmp_path):
    r = run_sft(["--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], check=False)
    assert r.returncode != 0 and "nope: not a checkpoint directory" in r.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Q1?", "answer": "3", "solution": "x = 1 + 2 = 3"}\n{"question": "Q2?"\n')
    r = run_sft(["--model", model_dir, "--data", str(bad), "--format", "cot", "--out", str(tmp_path / "o")], check=False)
    assert r.returncode != 0 and f"{bad}:2" in r.stderr
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "a", "question": "Q1?", "answer": "3"}\n')
    r = run_sft(["--model", model_dir, "--data", str(good), "--out", str(tmp_path / "o")], check=False)
    assert r.returncode != 0 and "--targets" in r.stderr and "have none" in r.stderr


@pytest.mark.cli
def test_non_finite_loss_stops_without_touching_the_checkpoint(model_dir, tmp_path):
    out = str(tmp_path / "o")
    run_sft(["--model", model_dir, "--out", out, *COMMON, "--stop-at", "2"], expect=STOPPED)  # good at step 2
    before = open(os.path.join(out, "model.safetensors"), "rb").read()
    state = torch.load(os.path.join(out, "train_state.pt"), weights_only=True)
    state["args"].update(lr=float("inf"), save_every=1)  # the next update blows up the weights
    torch.save(state, os.path.join(out, "train_state.pt"))
    r = run_sft(["--out", out, "--resume"], check=False)
    assert r.returncode != 0 and "non-finite" in r.stderr
    assert open(os.path.join(out, "model.safetensors"), "rb").read() == before
    assert torch.load(os.path.join(out, "train_state.pt"), weights_only=True)["step"] == 2


def test_replay_share_of_a_batch_is_what_was_set(tok):
    from comt.corpus import split_questions
    from sft_comt import global_batch
    examples = [encode_example(tok, p, "comt") for p in make_split("train", 40)]
    lengths = tuple(len(ids) for ids, _ in examples)
    questions = split_questions()
    for share, batch, want in ((0.25, 8, 2), (0.5, 6, 3), (0.0, 8, 0)):
        for step in (0, 7):
            sft, replay = global_batch(step, examples, lengths, batch, share, seed=0, tok=tok)
            assert (len(sft), len(replay)) == (batch - want, want)
            assert all(e in examples for e in sft) and not any(e in examples for e in replay)
            for ids, sup in replay:  # base-corpus worked problems: execution supervised, never a split's question
                text, target = tok.decode(ids), tok.decode([t for t, s in zip(ids, sup) if s])
                assert target.startswith("Solution:\n") and "\nAnswer: " in target and "Plan:" not in target
                assert "\nPlan:\n" in text  # the corpus's planned kind only
                assert text.split("\n")[0].removeprefix("Question: ") not in questions
    again = global_batch(7, examples, lengths, 8, 0.25, seed=0, tok=tok)
    assert again == global_batch(7, examples, lengths, 8, 0.25, seed=0, tok=tok)  # a pure function of the step
    assert again[1] != global_batch(8, examples, lengths, 8, 0.25, seed=0, tok=tok)[1]


@pytest.mark.cli
def test_resume_continues_the_directory_it_is_given_and_refuses_other_flags(model_dir, tmp_path):
    full, cut, copy = str(tmp_path / "full"), str(tmp_path / "cut"), str(tmp_path / "copy")
    run_sft(["--model", model_dir, "--out", full, *COMMON])
    run_sft(["--model", model_dir, "--out", cut, *COMMON, "--stop-at", "3"], expect=STOPPED)
    shutil.copytree(cut, copy)
    before = (Path(cut) / "log.jsonl").read_text(), (Path(cut) / "model.safetensors").read_bytes()
    r = run_sft(["--out", copy, "--resume", "--lr", "1e-4", "--batch", "8"], check=False)
    assert r.returncode != 0 and "--lr 0.0001 differs from the checkpoint's 0.003" in r.stderr
    assert "--batch" not in r.stderr.split("differs")[0]  # the same value as saved is no difference
    run_sft(["--out", copy, "--resume", "--batch", "8"])
    assert logged_losses(copy) == logged_losses(full)  # the copy continued exactly, in its own directory
    assert ((Path(cut) / "log.jsonl").read_text(), (Path(cut) / "model.safetensors").read_bytes()) == before
    run_sft(["--out", copy, "--resume", "--steps", "8"])  # --steps may change: the run is extended
    assert max(logged_losses(copy)) == 7


@pytest.mark.cli
def test_quick_check_and_evaluate_agree_on_the_same_checkpoint(tmp_path):
    """sft_comt's summary and evaluate.py answer the same test problems of the same checkpoint alike
    (one greedy evaluation): the same accuracy and plan rate, on a model that answers some right."""
    import evaluate
    import sft_comt
    out, res = str(tmp_path / "sft"), str(tmp_path / "eval.json")
    sft_comt.main(["--out", out, "--steps", "100", "--eval-n", "60", "--log-every", "50"])  # from the shipped base
    with open(os.path.join(out, "log.jsonl")) as f:
        summary = json.loads(f.readlines()[-1])
    evaluate.main(["--ckpt", out, "--splits", "test", "--n", "60", "--max-new-tokens", "256", "--json", res,
                   "--no-plots"])
    with open(res) as f:
        m = json.load(f)["results"]["sft"]["test"]
    assert summary["test_acc"] > 0
    assert (summary["test_acc"], summary["plan_rate"]) == (round(m["acc"], 3), round(m["plan_rate"], 3))


@pytest.mark.cli
def test_token_counts_equal_a_hand_count(model_dir, tok, tmp_path):
    """Every step's trained and supervised tokens, counted here from the step's global batch (the SFT
    examples and the replay documents of that step), equal the logged ones; the checks and the summary
    carry their running totals."""
    import sft_comt
    from sft_comt import global_batch
    out = str(tmp_path / "o")
    sft_comt.main(["--model", model_dir, "--out", out, "--n-train", "48", "--batch", "8", "--steps", "4", "--log-every",
                   "1", "--eval-n", "2", "--eval-max-new", "4", "--eval-every", "2", "--eval-split", "val"])
    rows = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    examples = [encode_example(tok, p, "comt") for p in make_split("train", 48)]
    lengths = tuple(len(ids) for ids, _ in examples)
    trained, sup, own = [], [], []
    for step in range(4):
        sft, replay = global_batch(step, examples, lengths, 8, 0.25, 0, tok)
        trained.append(sum(len(ids) for ids, _ in sft + replay))
        sup.append(sum(sum(s[1:]) for _, s in sft + replay))  # (the first token is never predicted)
        own.append(sum(sum(s[1:]) for _, s in sft))
    steps = [r for r in rows if "loss" in r]
    assert [r["train_tokens"] for r in steps] == trained and [r["sup_tokens"] for r in steps] == sup
    checks = [r for r in rows if r.get("eval")]
    assert [(r["step"], r["split"], r["train_tokens"]) for r in checks] == [(2, "val", sum(trained[:2])),
                                                                         (4, "val", sum(trained))]
    assert (rows[-1]["train_tokens"], rows[-1]["sup_tokens"], rows[-1]["replay_sup_tokens"]) == \
        (sum(trained), sum(own), sum(sup) - sum(own))
    assert "val_acc" in rows[-1] and "test_acc" not in rows[-1]
