"""Hostile use, one class of finding per section: reading a run directory never runs code; sharded
runs lose nothing (a non-root owner, a kill at every operation of a commit); inputs that would train
or report something wrong are refused; refusals are one line, from one rank, with nothing written."""
import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import stopped
from comt import lifecycle
import sft_comt
from test_ccrl import SMALL, log_rows, run_ccrl
from comt.tasks import MAX_LINE
from test_sft import COMMON, ROOT, free_port, run_sft

TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2")


def torchrun():
    return (*TORCHRUN, "--master_port", str(free_port()))


class RunsCode:
    """A pickle that creates `path` when it is unpickled with code execution."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def one_line(res) -> str:
    """The refusal a process printed: one line on stderr beyond warnings (argparse's usage lines before
    its error line aside), a non-zero exit status and no traceback."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "Warning" not in ln and "warn(" not in ln]
    assert "Traceback" not in res.stderr and res.returncode != 0, res.stderr[-3000:]
    if res.returncode == 2 and ": error: " in lines[-1]:
        return lines[-1]
    assert len(lines) == 1, res.stderr[-3000:]
    return lines[0]


# -----------------------------------------------------------------------------
# Security: nothing read from a run directory runs code

SHARDS_SCRIPT = """
import os, sys, torch, torch.distributed as dist
sys.path.insert(0, {root!r})
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT={port!r}, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
dist.init_process_group("gloo")
from torch.distributed.fsdp import fully_shard
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
from comt.lifecycle import load_optimizer_shards
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
for block in m:
    fully_shard(block)
fully_shard(m)
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
if sys.argv[1] == "save":
    m(torch.randn(3, 4)).sum().backward()
    opt.step()
    osd = get_optimizer_state_dict(m, opt)
    if len(sys.argv) > 3:  # a non-tensor item that runs code when unpickled
        import pickle
        exec(sys.argv[3])
        osd["param_groups"][0]["lr"] = payload
    dcp.save(osd, checkpoint_id=sys.argv[2])
else:
    load_optimizer_shards(m, opt, sys.argv[2])
    print("loaded", get_optimizer_state_dict(m, opt)["state"]["0.weight"]["step"].item())
dist.destroy_process_group()
"""


def shards(*argv):
    script = SHARDS_SCRIPT.format(root=ROOT, port=str(free_port()))
    return subprocess.run([sys.executable, "-c", script, *map(str, argv)], capture_output=True, text=True, cwd=ROOT)


def test_crafted_optimizer_shards_run_no_code(tmp_path):
    good, meta, item = tmp_path / "good", tmp_path / "meta", tmp_path / "item"
    assert shards("save", good).returncode == 0
    assert shards("load", good).stdout.strip() == "loaded 1.0"  # the safe reader reads a real checkpoint
    marker = tmp_path / "ran"
    shutil.copytree(good, meta)
    with open(meta / ".metadata", "wb") as f:  # crafted metadata
        pickle.dump(RunsCode(marker), f)
    assert "missing or unreadable" in one_line(shards("load", meta)) and not marker.exists()
    payload = f"class P:\n    def __reduce__(self): return (os.system, ('touch {marker}',))\npayload = P()"
    assert shards("save", item, payload).returncode == 0 and not marker.exists()
    assert "missing or unreadable" in one_line(shards("load", item)) and not marker.exists()


@pytest.mark.cli
def test_a_plain_run_never_takes_the_sharded_path(model_dir, tmp_path):
    """A one-process checkpoint whose optimiser entry is empty, beside crafted shards, is refused on
    --resume: the sharded reader is for sharded runs only, and nothing runs."""
    out, marker = str(tmp_path / "o"), tmp_path / "ran"
    run_sft(["--model", model_dir, "--out", out, *COMMON, "--stop-at", "2"], expect=lifecycle.STOPPED)
    state = torch.load(os.path.join(out, lifecycle.STATE_FILE), weights_only=True)
    torch.save(dict(state, optimizer=None), os.path.join(out, lifecycle.STATE_FILE))
    os.makedirs(os.path.join(out, lifecycle.SHARDS))
    with open(os.path.join(out, lifecycle.SHARDS, ".metadata"), "wb") as f:
        pickle.dump(RunsCode(marker), f)
    res = run_sft(["--out", out, "--resume"], check=False)
    assert "does not match its arguments" in one_line(res) and not marker.exists()


# -----------------------------------------------------------------------------
# Data loss: sharded runs are as safe as single ones


def without_file_mode_override() -> tuple:
    """A launcher prefix under which file modes bind as they bind a user who is not root."""
    if os.geteuid() != 0:
        return ()
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: file modes cannot be made to bind")
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")


@pytest.mark.cli
def test_a_sharded_run_of_a_non_root_owner_saves_twice_and_resumes(model_dir, tmp_path):
    out = str(tmp_path / "o")
    as_user = without_file_mode_override()
    run_sft(["--model", model_dir, "--out", out, *COMMON, "--shard", "--save-every", "2", "--stop-at", "4"],
            launcher=(*as_user, *torchrun()), expect=1)  # checkpoints at 2 and 4, then stopped
    assert oct(os.stat(os.path.join(out, lifecycle.SHARDS)).st_mode & 0o777) == oct(0o777 & ~lifecycle.current_umask())
    run_sft(["--out", out, "--resume"], launcher=(*as_user, *torchrun()))
    assert [r["step"] for r in log_rows(out) if "step" in r and "loss" in r] == list(range(6))


def committed_sharded_save(root: str) -> str:
    """A run directory holding an old checkpoint (step 1, shards "old") and a committed save of a
    newer one (step 2, shards "new") still in OUT/.partial: the state a kill leaves during a commit."""
    out = os.path.join(root, "o")
    for folder, step in ((out, 1), (os.path.join(out, lifecycle.PARTIAL), 2)):
        os.makedirs(os.path.join(folder, lifecycle.SHARDS))
        with open(os.path.join(folder, lifecycle.SHARDS, "__0_0.distcp"), "w") as f:
            f.write("old" if step == 1 else "new")
        with open(os.path.join(folder, "model.safetensors"), "w") as f:
            f.write(f"weights {step}")
        torch.save(dict(step=step), os.path.join(folder, lifecycle.STATE_FILE))
    return out


def test_a_kill_at_any_operation_of_a_sharded_commit_keeps_the_new_shards(tmp_path, monkeypatch):
    class Killed(BaseException):
        pass

    ops = []
    for mod, name in ((os, "replace"), (os, "rmdir"), (shutil, "rmtree"), (os, "remove")):
        real = getattr(mod, name)

        def op(*a, _real=real, _name=f"{mod.__name__}.{name}", **k):
            ops.append(_name)
            if len(ops) - 1 == kill_at:
                raise Killed(_name)
            return _real(*a, **k)
        monkeypatch.setattr(mod, name, op)
    kill_at = None
    lifecycle.finish_interrupted_save(committed_sharded_save(str(tmp_path / "count")))
    counted = list(ops)
    assert counted.count("os.replace") == 3 and "shutil.rmtree" in counted
    for kill_at in range(len(counted)):
        ops.clear()
        out = committed_sharded_save(str(tmp_path / f"k{kill_at}"))
        with pytest.raises(Killed):
            lifecycle.finish_interrupted_save(out)
        ops.clear()
        kill_at_now, kill_at = kill_at, None
        lifecycle.finish_interrupted_save(out)  # the next start finishes the commit
        kill_at = kill_at_now
        with open(os.path.join(out, lifecycle.SHARDS, "__0_0.distcp")) as f:
            assert f.read() == "new", f"killed before {counted[kill_at]} (#{kill_at})"
        assert torch.load(os.path.join(out, lifecycle.STATE_FILE), weights_only=True)["step"] == 2
        assert not os.path.exists(os.path.join(out, lifecycle.PARTIAL))


def test_teacher_never_writes_over_its_data(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(dict(id="a", question="q", answer="5", solution="2+3 = <<2+3=5>>5\n#### 5")) + "\n")
    before = data.read_text()
    res = subprocess.run([sys.executable, "teacher.py", "--data", str(data), "--out", str(data)], cwd=ROOT,
                         capture_output=True, text=True)
    assert "is the --data file" in res.stderr.splitlines()[-1] and res.returncode == 2
    assert data.read_text() == before


# -----------------------------------------------------------------------------
# Wrong results that look right


def test_repeated_problem_ids_are_refused(tmp_path):
    from comt.tasks import problems_for_cli
    rows = [dict(id=0, question="What is 2 + 3?", answer="5"), dict(id=0, question="What is 4 + 4?", answer="8")]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit, match=r"d\.jsonl:2: id '0' repeats line 1"):
        problems_for_cli(str(data), 10, None, 0)
    targets = tmp_path / "t.jsonl"
    targets.write_text(json.dumps(dict(id="a", plan="Add them.")) + "\n" + json.dumps(dict(id="a", plan="x.")) + "\n")
    with pytest.raises(SystemExit, match=r"t\.jsonl:2: id 'a' repeats line 1"):
        sft_comt.read_targets(str(targets))


@pytest.mark.parametrize("row, words", [(dict(id="a", plan="Add 2 and 3."), "the plan has a digit"),
                                        (dict(id="a", plan=["Add them."]), "'plan' must be a text, not list")])
def test_targets_a_comt_run_cannot_use_are_refused(tmp_path, row, words):
    targets = tmp_path / "t.jsonl"
    targets.write_text(json.dumps(row) + "\n")
    with pytest.raises(SystemExit, match=words):
        sft_comt.read_targets(str(targets))


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


@pytest.mark.cli
def test_a_run_cannot_be_shortened_on_resume(model_dir, tmp_path):
    out = str(tmp_path / "o")
    stopped(sft_comt.main, ["--model", model_dir, "--out", out, *COMMON, "--stop-at", "4"])
    before = sorted(os.listdir(out))
    with pytest.raises(SystemExit, match="--steps 2 is below the checkpoint's step 4"):
        sft_comt.main(["--out", out, "--resume", "--steps", "2"])
    assert sorted(os.listdir(out)) == before


def test_experiment_refuses_a_seed_twice_and_budgets_that_would_not_apply(capsys):
    import experiment
    for argv, words in ((["--seeds", "0", "0"], "a seed given twice"),
                        (["--quick", "--rl-steps", "5"], "--quick sets its own budgets: --rl-steps")):
        with pytest.raises(SystemExit):
            experiment.parse_args(argv)
        assert words in capsys.readouterr().err


def test_bench_samples_as_many_rl_prompts_as_it_reports(monkeypatch):
    import bench
    seen = {}
    monkeypatch.setattr(bench, "best_rl_step", lambda model, prompts, *a: seen.setdefault("n", len(prompts)) and (1, 1))
    monkeypatch.setattr(bench, "sft_step_run", lambda *a: (lambda: None, 10))
    monkeypatch.setattr(bench, "best_times", lambda fns, *a: {k: 1.0 for k in fns})
    from types import SimpleNamespace
    args = SimpleNamespace(sft_batch=2, sft_len=8, repeats=1, rl_prompts=12, rl_group=2, new_tokens=4, rl_micro=4)
    row = bench.stage_steps(None, [[1, 2]] * 4, torch.device("cpu"), None, args)  # 4 prompts: --batch 4
    assert seen["n"] == row["rl_prompts"] == 12


def test_evaluation_tables_say_what_they_skipped():
    from evaluate import markdown_tables
    m = dict(acc=0.5, acc_lenient=0.5, n=3, skipped=2, **{k: 0.0 for k in (
        "tokens", "plan_rate", "ece", "brier", "auroc", "step_acc", "step_ece", "overconf_err", "first_wrong_conf",
        "plan_correct", "plan_followed", "wrong_plan", "not_followed", "executed_wrongly")})
    assert "Skipped, too long for the model's context (not in the tables above): ck test: 2 of 5" in \
        markdown_tables({"ck": {"test": m}})


# -----------------------------------------------------------------------------
# Refusals: one line, before any work, nothing written


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
        os.makedirs(out / lifecycle.LOCK_FILE)
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
def test_a_read_only_out_is_one_line(model_dir, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    out.chmod(0o555)
    res = run_sft(["--model", model_dir, "--out", str(out), *COMMON], check=False,
                  launcher=(*without_file_mode_override(), sys.executable))
    assert "choose a directory you can write" in one_line(res) and os.listdir(out) == []


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


def test_engine_cli_refuses_empty_and_over_long_prompts(model_dir):
    for prompt, words in (("  ", "--prompt is empty"), ("apples " * 2000, "longer than the")):
        res = subprocess.run([sys.executable, "-m", "comt.engine", "--model", model_dir, "--prompt", prompt], cwd=ROOT,
                             capture_output=True, text=True)
        assert words in one_line(res)


@pytest.mark.parametrize("script", ["experiment.py", "teacher.py"])
def test_unwritable_outputs_are_found_before_the_work(script, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    flags = (["--results", str(blocker / "r")] if script == "experiment.py"
             else ["--out", str(blocker / "t.jsonl"), "--data", "gsm8k:train"])
    res = subprocess.run([sys.executable, script, *flags], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and ("cannot write" in res.stderr or "cannot create" in res.stderr), res.stderr


# -----------------------------------------------------------------------------
# Cosmetic: the right words


def test_refusals_name_their_cause(model_dir, tmp_path):
    from comt.common import check_checkpoint
    out = tmp_path / "o"
    out.mkdir()
    (out / lifecycle.RUN_FILE).write_text("{not json")
    with pytest.raises(SystemExit, match=r"its run\.json cannot be read"):
        sft_comt.main(["--model", model_dir, "--out", str(out), *COMMON])
    bad = tmp_path / "rope"
    shutil.copytree(model_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps(dict(cfg, rope_scaling=dict(rope_type="llama3", factor=8.0))))
    with pytest.raises(SystemExit, match="rope_scaling of type 'llama3' needs a positive number"):
        check_checkpoint(str(bad), "--model")


@pytest.mark.cli
@pytest.mark.parametrize("ranks", [2, 1])
def test_a_stopped_sharded_run_suggests_a_resume_that_works(model_dir, tmp_path, ranks):
    """A sharded run needs torchrun to resume, even on one rank (--shard refuses a plain python)."""
    out = str(tmp_path / "o")
    launcher = [*torchrun()]
    launcher[launcher.index("--nproc_per_node") + 1] = str(ranks)
    res = run_sft(["--model", model_dir, "--out", out, *COMMON, "--shard", "--stop-at", "2"], launcher=launcher,
                  expect=1)
    assert f"continue with: torchrun --nproc_per_node {ranks} sft_comt.py --out {out} --resume" in res.stdout


def test_teacher_that_writes_no_plan_fails(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(dict(id="a", question="q", answer="5")) + "\n")  # no annotated solution
    out = tmp_path / "t.jsonl"
    res = subprocess.run([sys.executable, "teacher.py", "--data", str(data), "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 1 and "no plan written" in res.stderr and not out.exists()


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


def test_evaluate_refuses_empty_data():
    import evaluate
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--ckpt", ROOT + "/models/base", "--data", ""])
