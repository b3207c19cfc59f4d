"""--shard (FSDP2) on CPU with gloo, 2 ranks: the update equals one process's on the whole batch, a
killed sharded run resumes bit-identically, and its output directory is a plain Hugging Face model.

Tolerance of the parity checks: the sharded run sums each gradient over ranks (reduce-scatter) where
one process sums it in one pass, so float32 rounding differs at ~1e-7 relative per step; a few AdamW
steps at lr 1e-3 to 3e-3 keep the weights within 1e-5 of each other (the DDP test's bound), while
any real error (a missing rank's rows, a gradient averaged instead of summed) moves them by ~lr."""
import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_ccrl import samples

from comt.model import Transformer
from comt.parallel import Dist, shard_model
from conftest import COMMON, ROOT, log_rows, logged_losses, run_sft, tiny_model, torchrun

TORCHRUN_STOPPED = 1  # torchrun reports any worker's non-zero exit (ours: STOPPED) as 1


def same_weights(a: str, b: str, exact: bool):
    x, y = Transformer.from_pretrained(a).state_dict(), Transformer.from_pretrained(b).state_dict()
    assert x.keys() == y.keys()
    for k in x:
        if exact:
            assert torch.equal(x[k], y[k]), k
        else:
            torch.testing.assert_close(x[k], y[k], atol=1e-5, rtol=1e-4)


@pytest.mark.cli
def test_sharded_sft_matches_one_process_resumes_exactly_and_loads_in_transformers(model_dir, tmp_path):
    one, two, cut = (str(tmp_path / n) for n in ("one", "two", "cut"))
    run_sft(["--model", model_dir, "--out", one, *COMMON])
    run_sft(["--model", model_dir, "--out", two, *COMMON, "--shard", "--grad-checkpoint"], launcher=torchrun())
    l1, l2 = logged_losses(one), logged_losses(two)
    assert l1.keys() == l2.keys() and all(abs(l1[k] - l2[k]) < 1e-4 for k in l1)
    same_weights(one, two, exact=False)
    assert os.path.isdir(os.path.join(two, "optimizer_shards"))
    run_sft(["--model", model_dir, "--out", cut, *COMMON, "--shard", "--grad-checkpoint", "--stop-at", "3"],
            launcher=torchrun(),
            expect=TORCHRUN_STOPPED)
    run_sft(["--out", cut, "--resume"], launcher=torchrun())
    assert logged_losses(cut) == l2
    same_weights(two, cut, exact=True)
    r = run_sft(["--out", cut, "--resume", "--steps", "8"], check=False)  # a sharded run outside torchrun
    assert r.returncode != 0 and "--shard runs under torchrun" in r.stderr
    from transformers import AutoModelForCausalLM
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(two).eval()(ids).logits
        ours = Transformer.from_pretrained(two)(ids)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_grad_checkpoint_keeps_less_for_backward_and_gives_the_same_gradients():
    from conftest import ragged_batch
    ids, mask, _ = ragged_batch([7, 4, 9], vocab=50)
    grads, kept = [], []
    for ckpt in (False, True):
        model = tiny_model(50).train()
        model.grad_checkpoint = ckpt
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            loss = model(ids, mask).logsumexp(-1).mean()
        loss.backward()
        grads.append([p.grad for p in model.parameters()])
        kept.append(sum(saved))
    assert kept[1] < kept[0]
    assert all(torch.equal(a, b) for a, b in zip(*grads))


# -- the RL update, in process: 2 gloo ranks on half the rows each against one process on all of them


def rl_update(model, rows, kept_totals, world: int):
    """ccrl.policy_update on `rows` (seqs, prompt lens, advantages) with fixed settings; the grad norm."""
    import argparse

    from ccrl import Kept, Rollout, Run, Sampling, Update, policy_update
    from comt.training import Schedule
    from rewards import RewardSettings
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    d = Dist(dist.get_rank(), world) if world > 1 else Dist()
    run = Run(args=argparse.Namespace(out="-"), dist=d, device=torch.device("cpu"), tok=None, model=model, opt=opt,
              sharded=world > 1, schedule=Schedule(lr=1e-3, warmup=0, steps=3), sampling=Sampling(max_new_tokens=8),
              scoring=RewardSettings(), update=Update(micro_batch=2, ppo_epochs=2))
    seqs, plens, adv = rows
    kept = Kept(torch.ones(1, dtype=torch.bool), list(range(len(seqs))), adv, kept_totals)
    norms = []
    for step in range(3):
        ro = Rollout(seqs, plens, judged=[], group_size=1, prompt_tokens=0, completion_tokens=0, problems=[])
        norms.append(policy_update(run, ro, kept, step)[1])
    return norms


def all_rows(vocab: int):
    seqs, plens = samples(vocab, n=6, seed=3)
    adv = [1.0, -0.5, 0.25, -1.0, 0.0, 0.75]
    totals = (float(sum(len(s) - p for s, p in zip(seqs, plens))), float(len(seqs)))
    return (seqs, plens, adv), totals


def sharded_rank(rank: int, world: int, init: str, vocab: int, out: str):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    model = shard_model(tiny_model(vocab), torch.device("cpu"))
    (seqs, plens, adv), totals = all_rows(vocab)
    mine = [i for i in range(len(seqs)) if i % world == rank and adv[i] != 0]  # rank 1 gets fewer rows
    norms = rl_update(model, ([seqs[i] for i in mine], [plens[i] for i in mine], [adv[i] for i in mine]), totals,
                      world)
    state = {k: v.full_tensor() for k, v in model.state_dict().items()}
    if rank == 0:
        torch.save(dict(state=state, norms=norms), out)
    dist.barrier()
    dist.destroy_process_group()


def test_sharded_rl_update_matches_one_process(tmp_path):
    vocab = 50
    one = tiny_model(vocab)
    rows, totals = all_rows(vocab)
    norms = rl_update(one, rows, totals, world=1)
    out = str(tmp_path / "two.pt")
    mp.spawn(sharded_rank, args=(2, f"file://{tmp_path}/pg", vocab, out), nprocs=2)
    two = torch.load(out)
    assert two["norms"] == pytest.approx(norms, rel=1e-5)
    moved = 0.0
    for k, v in one.state_dict().items():
        torch.testing.assert_close(two["state"][k], v, atol=1e-5, rtol=1e-4)
        moved = max(moved, (v - tiny_model(vocab).state_dict()[k]).abs().max().item())
    assert moved > 1e-4  # the update did something the comparison can see


def run_ccrl_2(args, expect=0):
    import subprocess
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([*torchrun(), "ccrl.py", *args], cwd=ROOT, capture_output=True, text=True, env=env)
    assert res.returncode == expect, f"ccrl.py: exit {res.returncode}:\n{res.stderr[-3000:]}"


@pytest.mark.cli
def test_sharded_rl_run_resumes_exactly(model_dir, tmp_path):
    from conftest import SMALL
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    small = [*SMALL, "--shard", "--kl-coef", "0.1"]
    run_ccrl_2(["--init", model_dir, "--out", full, *small])
    run_ccrl_2(["--init", model_dir, "--out", cut, *small, "--stop-at", "2"], expect=TORCHRUN_STOPPED)
    run_ccrl_2(["--out", cut, "--resume"])
    strip = lambda rs: [{k: v for k, v in r.items() if not k.endswith(("_s", "seconds", "share"))} for r in rs]
    rows = log_rows(full)
    assert any("gather_s" in r for r in rows)
    resumed = log_rows(cut)
    assert json.dumps(strip(resumed[:-1])) == json.dumps(strip(rows[:-1]))  # as text: nan equals nan
    same_weights(full, cut, exact=True)


@pytest.mark.cli
def test_a_refusal_under_torchrun_is_one_line_from_one_rank(model_dir, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    res = run_sft(["--model", model_dir, "--out", str(out), *COMMON], check=False, launcher=torchrun())
    refusals = [ln for ln in res.stderr.splitlines() if "holds files that are not a run" in ln]
    assert len(refusals) == 1 and not [ln for ln in res.stderr.splitlines() if ln.startswith("[rank")]
    assert res.stderr.count("Traceback") <= 1  # torchrun's own report of a worker that exited non-zero
    assert sorted(os.listdir(out)) == ["notes.txt"]


def test_one_process_is_the_world_of_one():
    """A step's rank helpers in one process: every row is this rank's, a sum is the value, a gather
    the one object."""
    d = Dist()
    assert d.main and d.share([1, 2, 3]) == [1, 2, 3] and d.gather("x") == ["x"]
    x = torch.tensor([1.5, 2.0])
    assert d.sum(x) is x and x.tolist() == [1.5, 2.0]
    assert Dist(rank=1, world=3).share(list(range(7))) == [1, 4]
