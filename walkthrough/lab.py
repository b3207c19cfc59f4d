"""
The walkthrough's bench, so that walkthrough.py holds only the lessons: its output folder, section
timing, saving figures, and running the stages and the evaluation once, reusing what is already
there only when the run itself says it is the one asked for.

Reuse is decided from what a run records, never from a stamp beside it: a stage run is reused when
its checkpoint's arguments are the command's, it was made by today's code and from the checkpoint
that is in its start folder today (`checks["init"]`, comt.common.checkpoint_id); a run that stopped
part-way continues from its checkpoint; anything else is trained again. An evaluation is reused when
its JSON names the same checkpoints, flags and code, and each checkpoint is still the one it read.
Every file is written by replacing it (comt.common.replacing): a link in the output folder is
refused, never written through.
"""
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from comt.common import checkpoint_id, code_version, load_train_state, replacing, save_figure  # noqa: E402
from comt.lifecycle import RESUMABLE, STOPPED, run_owner  # noqa: E402

# -----------------------------------------------------------------------------
# The output folder, sections and figures


def output_folder(profile: str) -> str:
    """COMT_WALK_OUT (an empty value counts as unset), else runs/walk_<profile>; made with its figures/
    folder. One line, before anything is written, when it is a file, or holds links or a figures that
    is not a folder."""
    out = os.path.abspath(os.environ.get("COMT_WALK_OUT") or os.path.join(ROOT, "runs", f"walk_{profile}"))
    figures = os.path.join(out, "figures")
    if os.path.lexists(out) and (os.path.islink(out) or not os.path.isdir(out)):
        raise SystemExit(f"COMT_WALK_OUT {out}: not a folder (a file or a link); choose another")
    if os.path.lexists(figures) and (os.path.islink(figures) or not os.path.isdir(figures)):
        raise SystemExit(f"{figures}: not a folder (a file or a link); remove it or choose another COMT_WALK_OUT")
    for folder in (out, figures):
        names = os.listdir(folder) if os.path.isdir(folder) else []
        links = [n for n in names if os.path.islink(os.path.join(folder, n))]
        if links:
            raise SystemExit(f"{folder}: holds a link ({links[0]}); the walkthrough writes only files of its own, so "
                             f"remove it or choose another COMT_WALK_OUT")
    os.makedirs(figures, exist_ok=True)
    return out


class Sections:
    """Each section's seconds, kept in <out>/sections.json as the walkthrough goes."""

    def __init__(self, out: str, profile: str):
        self.out, self.profile, self.seconds = out, profile, {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.time()
        yield
        self.seconds[name] = round(time.time() - t0, 1)
        with replacing(os.path.join(self.out, "sections.json")) as f:
            json.dump(dict(profile=self.profile, seconds=self.seconds), f, indent=1)
        print(f"[section {name}: ok, {self.seconds[name]} s]")


def save(fig, out: str, name: str, inline: bool) -> str:
    """Save a figure as <out>/figures/<name>.png; show it inline under a notebook kernel."""
    import matplotlib.pyplot as plt
    path = os.path.join(out, "figures", f"{name}.png")
    if fig.get_layout_engine() is None:  # (a figure that sets its own layout, e.g. a shared colour bar, keeps it)
        fig.tight_layout()
    save_figure(fig, path, dpi=110, bbox_inches="tight")
    plt.show() if inline else plt.close(fig)
    return path


def write_page(path: str, html: str):
    with replacing(path) as f:
        f.write(html)


# -----------------------------------------------------------------------------
# Stage runs: reused, continued or trained, as the run's own record says


def parsed(script: str, args: list[str]) -> dict:
    """The arguments a stage would run with: its own parser on `args`."""
    if script == "sft_comt.py":
        from sft_comt import parse_args
    else:
        from ccrl import parse_args
    return vars(parse_args(args))


def differing(a: dict, b: dict) -> set[str]:
    """The flags two runs' arguments differ in, how they were run aside (the flags --resume may
    change, but --steps)."""
    ignore = set(RESUMABLE) - {"steps"}
    return {k for k in a.keys() | b.keys() if k not in ignore and a.get(k) != b.get(k)}


def verdict(script: str, args: list[str], out: str) -> str:
    """'reuse', 'resume', 'new', or why the run in `out` must be trained again ('rerun: ...')."""
    state = load_train_state(out, mmap=True) if os.path.isdir(out) else None
    if state is None:
        return "new"
    wanted = parsed(script, [*args, "--out", out])
    other = differing(state["args"], wanted)
    start = wanted.get("init") or wanted.get("model")
    if other:
        return f"rerun: made with other flags ({', '.join('--' + k.replace('_', '-') for k in sorted(other))})"
    if state.get("code") != code_version():
        return "rerun: made by other code than today's"
    if state.get("checks", {}).get("init") != checkpoint_id(start):
        return f"rerun: {start}, where it started, has changed since"
    finished = state["step"] >= state["args"]["steps"] and summary_logged(out)
    return "reuse" if finished else "resume"


def summary_logged(out: str) -> bool:
    path = os.path.join(out, "log.jsonl")
    return os.path.isfile(path) and '"summary": true' in (open(path).read().splitlines() or [""])[-1]


def stage(script: str, args: list[str], out: str):
    """Run a stage in a subprocess (it takes the interrupt handler and locks its folder for the life of
    its process, which a notebook kernel must not lose), unless `out` already holds this very run;
    continue one that stopped part-way. Shows a progress bar and the summary, not every log line."""
    what = verdict(script, args, out)
    if what == "reuse":
        print(f"reusing {out}: its checkpoint records this command, today's code and its start")
        return
    if what.startswith("rerun"):
        print(f"{what}: training it again")
        if run_owner(out) != script:
            raise SystemExit(f"{out}: holds no run of {script} to replace; remove it or choose another COMT_WALK_OUT")
        shutil.rmtree(out)
    cmd = [script, "--out", out, "--resume"] if what == "resume" else [script, *args, "--out", out]
    print(("continuing from its checkpoint: " if what == "resume" else "") + f"$ python {' '.join(cmd)}", flush=True)
    quietly(cmd)


def quietly(cmd: list[str]):
    """Run a stage, turning its step lines into one progress bar; its other lines (the example, the
    summary) are printed; on failure, the tail of what it wrote to stderr."""
    from tqdm.auto import tqdm
    proc = subprocess.Popen([sys.executable, *cmd], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, TQDM_DISABLE="1"))
    bar = tqdm(desc=cmd[0], unit="step", leave=False)
    with contextlib.closing(bar):
        for line in proc.stdout:
            row = json.loads(line) if line.startswith("{") else None
            if row is not None and "step" in row and not row.get("eval"):
                bar.update(row["step"] + 1 - bar.n)
            elif row is not None and row.get("summary"):
                print({k: v for k, v in row.items() if k not in ("summary", "out")})
            elif row is None and line.strip():
                print(line, end="")
    err = proc.stderr.read()
    if proc.wait() == STOPPED:
        raise SystemExit(f"{cmd[0]} stopped before its end; run the walkthrough again to continue from its checkpoint")
    if proc.returncode:
        print(err[-3000:], file=sys.stderr)
        raise SystemExit(f"{cmd[0]} failed (exit status {proc.returncode}; its last words are above)")


# -----------------------------------------------------------------------------
# Evaluations: reused while they answer for the checkpoints on disk


def evaluation(ckpts: list[str], flags: list[str], path: str) -> dict:
    """evaluate.py on `ckpts` with `flags`, its JSON at `path`; an earlier one is reused when it was made
    with the same checkpoints and flags by today's code and each checkpoint is still the one it read.
    On failure, evaluate.py's own words."""
    import evaluate
    wanted = vars(evaluate.parse_args(["--ckpt", *ckpts, *flags, "--json", path]))
    if os.path.isfile(path):
        with open(path) as f:
            done = json.load(f)
        if done.get("args") == wanted and done.get("code") == code_version() and \
                done.get("inputs") == {ck: checkpoint_id(ck) for ck in ckpts}:
            return done
    res = subprocess.run([sys.executable, "evaluate.py", "--ckpt", *ckpts, *flags, "--json", path], cwd=ROOT,
                         capture_output=True, text=True, env=dict(os.environ, TQDM_DISABLE="1"))
    if res.returncode:
        print(res.stdout[-1500:] + res.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"evaluate.py failed (exit status {res.returncode}; its words are above)")
    with open(path) as f:
        return json.load(f)
