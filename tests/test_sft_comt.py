import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

import sft_comt
from comt import checkpoint
from comt.benchmarks import MAX_LINE
from comt.lifecycle import STOPPED
from comt.model import Transformer
from comt.parallel import Dist
from comt.tasks import Problem, encode_example, make_split
from comt.training import Run, Schedule, pad_rows, target_logprobs, update
from conftest import COMMON, free_port, logged_losses, one_line, run_sft, tiny_model, write_rows
from sft_comt import SFTBatch, token_mean_loss

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
    """Stage 1's loss through training.update: the hand mean over every supervised token, and the
    same step however the batch is cut into micro-batches."""
    examples = [encode_example(tok, p, "cot") for p in make_split("train", 8)]
    n_sup = sum(sum(s[1:]) for _, s in examples)
    params = []
    for micro_size in (8, 4, 3):
        model = tiny_model(len(tok))
        want = loss_by_hand(model, examples, tok.pad_token_id).item()
        opt = torch.optim.SGD(model.parameters(), lr=1.0)  # the update is the gradient (Adam's first step is not)
        micro = [SFTBatch(*pad_rows([e for e, _ in examples[i:i + micro_size]], [m for _, m in examples[i:i + micro_size]],
                                    tok.pad_token_id)) for i in range(0, 8, micro_size)]
        run = Run(args=None, dist=Dist(), device=torch.device("cpu"), tok=None, model=model, opt=opt,
                  schedule=Schedule(lr=1.0, warmup=0, grad_clip=1e9, steps=1))
        stats, _ = update(run, micro, token_mean_loss(n_sup), step=0, empty=None)
        assert stats["loss_sum"].item() / n_sup == pytest.approx(want, rel=1e-5)
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert not torch.equal(params[0], torch.cat([p.detach().flatten() for p in tiny_model(len(tok)).parameters()]))
    for p in params[1:]:
        torch.testing.assert_close(p, params[0], atol=1e-6, rtol=1e-5)


def test_padding_does_not_change_the_loss(tok):
    examples = [encode_example(tok, p, "comt") for p in make_split("train", 3)]
    model = tiny_model(len(tok))
    n_sup = sum(sum(s[1:]) for _, s in examples)
    ids, mask = pad_rows([e for e, _ in examples], [m for _, m in examples], tok.pad_token_id)
    batched = token_mean_loss(n_sup)(None, target_logprobs(model, ids, mask), None)[0].item()
    assert batched == pytest.approx(loss_by_hand(model, examples, tok.pad_token_id).item(), rel=1e-5)


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
def test_quick_check_and_evaluate_ask_the_same_questions_the_same_way(model_dir, tmp_path, monkeypatch):
    """sft_comt's check and evaluate.py answer through the one greedy evaluation with the same
    arguments: the same test problems, the same length limit, no gold plan."""
    import evaluate
    import sft_comt
    from comt import evaluation
    calls = []

    def recorded(name):
        def greedy(engine, tok, problems, max_new_tokens, gold_plan=False, *rest, **kw):
            calls.append((name, [p.id for p in problems], max_new_tokens, gold_plan))
            return evaluation.greedy_judgements(engine, tok, problems, max_new_tokens, gold_plan, *rest, **kw)
        return greedy
    monkeypatch.setattr(sft_comt, "greedy_judgements", recorded("sft"))
    monkeypatch.setattr(evaluate, "greedy_judgements", recorded("evaluate"))
    out = str(tmp_path / "sft")
    sft_comt.main(["--model", model_dir, "--out", out, "--steps", "2", "--n-train", "32", "--batch", "4", "--eval-n", "4",
                   "--eval-max-new", "16"])
    evaluate.main(["--ckpt", out, "--splits", "test", "--n", "4", "--max-new-tokens", "16", "--json",
                   str(tmp_path / "e.json"), "--no-plots"])
    assert [c[0] for c in calls] == ["sft", "evaluate"] and calls[0][1:] == calls[1][1:]


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


def absurd_config(model_dir, tmp_path):
    bad = tmp_path / "absurd"
    shutil.copytree(model_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps(dict(cfg, num_hidden_layers=100_000)))
    return str(bad)


def big_line(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        f.write('{"id": "a", "plan": "' + "x" * (MAX_LINE + 10) + '"}\n')
    return str(path)


@pytest.mark.cli
@pytest.mark.parametrize("case", ["absurd config", "eval past the context", "seed out of range", "non-UTF-8 targets",
                                  "huge targets line", "lock is a folder", "offload without a GPU"])
def test_refusals_are_one_line_before_any_work(case, model_dir, tmp_path):
    out = tmp_path / "o"
    argv = ["--model", model_dir, "--out", str(out), *COMMON]
    if case == "absurd config":
        argv[1] = absurd_config(model_dir, tmp_path)
    elif case == "eval past the context":
        argv += ["--eval-max-new", "100000", "--eval-n", "2"]
    elif case == "seed out of range":
        argv += ["--seed", str(2 ** 40)]
    elif case == "non-UTF-8 targets":
        bad = tmp_path / "t.jsonl"
        bad.write_bytes(b'{"id": "train-00000", "plan": "caf\xe9"}\n')
        argv += ["--targets", str(bad)]
    elif case == "huge targets line":
        argv += ["--targets", big_line(tmp_path)]
    elif case == "lock is a folder":
        os.makedirs(out / checkpoint.LOCK_FILE)
    elif case == "offload without a GPU":
        argv += ["--offload", "--shard"]
    before = sorted(os.listdir(out)) if out.exists() else None
    line = one_line(run_sft(argv, check=False))
    words = {"absurd config": "does not describe its weights", "eval past the context": "quick-check problems",
             "seed out of range": "argument --seed", "non-UTF-8 targets": "t.jsonl:1: not UTF-8",
             "huge targets line": "big.jsonl:1: a line of over", "lock is a folder": "not a plain file",
             "offload without a GPU": "on the CPU there is nothing to offload"}[case]
    assert words in line
    assert (sorted(os.listdir(out)) if out.exists() else None) == before  # nothing written


@pytest.mark.cli
def test_over_long_examples_are_skipped_with_a_count_and_unmatched_targets_refused(model_dir, tmp_path, capsys):
    data = write_rows(tmp_path / "d.jsonl", [dict(id="a", question="What is 2 + 3?", answer="5"),
                                             dict(id="long", question="apples and pears " * 400, answer="1")])
    targets = write_rows(tmp_path / "t.jsonl", [dict(id=i, plan="Add the two numbers.", solution="x = 2 + 3 = 5")
                                                for i in ("a", "long", "other")])
    out = str(tmp_path / "o")
    sft_comt.main(["--model", model_dir, "--data", data, "--targets", targets, "--format", "cot", "--out", out,
                   "--steps", "1", "--batch", "1", "--eval-n", "0"])
    err = capsys.readouterr().err
    assert "1 of its 3 ids match no problem" in err and "skipped 1 of 2 training examples" in err
    with open(os.path.join(out, "log.jsonl")) as f:
        assert [json.loads(line) for line in f][-1]["examples"] == 1
    nowhere = write_rows(tmp_path / "n.jsonl", [dict(id="zzz", plan="Add them.")])
    with pytest.raises(SystemExit, match=r"none of its 1 ids is a problem of --data"):
        sft_comt.main(["--model", model_dir, "--data", data, "--targets", nowhere, "--out", str(tmp_path / "p")])
    assert not os.path.exists(tmp_path / "p")  # a refused run leaves nothing behind


def test_format_is_comt_or_cot_and_comt_by_default(capsys):
    with pytest.raises(SystemExit):
        sft_comt.parse_args(["--format", "plans"])
    assert "invalid choice: 'plans' (choose from" in capsys.readouterr().err
    assert sft_comt.parse_args([]).format == "comt" and sft_comt.parse_args([]).out == "runs/sft_comt"
    assert sft_comt.parse_args(["--format", "cot"]).out == "runs/sft_cot"
