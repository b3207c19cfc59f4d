"""
Small helpers the scripts share: device and dtype choice, seeding, strict-JSON logging, files
written by replacing them, which code and which checkpoint made a run, and reading a checkpoint
directory (one-line refusals for anything wrong in it). The flags themselves: comt/flags.py.
"""
import contextlib
import json
import math
import os
import random
import re
import sys
import tempfile

import numpy as np
import torch


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"--device {name}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA GPU is visible to torch on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise SystemExit(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device {name}: only cpu and cuda are supported")
    return device


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' -> bfloat16 on a GPU that supports it, float32 otherwise."""
    if name == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    if name not in DTYPES:
        raise SystemExit(f"unknown dtype {name!r}; choose from auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def jsonable(x):
    """x as strict JSON values: NaN and infinities (a metric with nothing to measure) become None
    (null), NumPy and tensor scalars plain numbers. Strict JSON has no NaN, and parsers reject it.

    >>> jsonable({"acc": float("nan"), "n": [1, float("inf"), 0.5]})
    {'acc': None, 'n': [1, None, 0.5]}
    """
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.generic, torch.Tensor)):
        x = x.item()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x


FLAT_LIST = re.compile(r"\[\n\s*([^\[\]{}]*?)\n\s*\]")  # a list that holds no list or object, laid out


def write_json(obj, path: str, indent: int | None = 1):
    """obj as strict JSON (jsonable) into the file `path` (replacing it: see replacing), each list
    of plain values on one line (per-problem outcomes would take a line each)."""
    text = json.dumps(jsonable(obj), indent=indent, allow_nan=False, default=str)
    with replacing(path) as f:  # (a newline never occurs inside a JSON string: it is escaped)
        f.write(FLAT_LIST.sub(lambda m: "[" + re.sub(r"\n\s*", " ", m.group(1)) + "]", text))


@contextlib.contextmanager
def replacing(path: str, mode: str = "w"):
    """A file to write that replaces `path` once it is complete: written beside it under a temporary
    name, then renamed over it. So a link at `path` is replaced, never written through (a folder
    prepared with links cannot aim a write at another file), and nobody reads half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # (mkstemp makes it private)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_figure(fig, path: str, **kwargs):
    """fig as a PNG at `path`, replacing it (replacing)."""
    with replacing(path, "wb") as f:
        fig.savefig(f, format="png", **kwargs)


def pyplot():
    """matplotlib's pyplot, drawing to files (no display needed); one line without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("plots need matplotlib (pip install -r requirements.txt)") from None
    return plt


def log_json(row: dict, path: str | None = None, stream=None):
    """Print one JSON line to stream (default: the current sys.stdout) and append it to `path` when
    given. Printed through tqdm, so a progress bar on the terminal is cleared first and redrawn
    below the line instead of being smeared through it."""
    from tqdm import tqdm
    line = json.dumps(jsonable(row), allow_nan=False)
    tqdm.write(line, file=stream or sys.stdout)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")

# -----------------------------------------------------------------------------
# Checkpoint directories

STATE_FILE = "train_state.pt"  # a training run's state beside its weights (comt/lifecycle.py writes it)


def load_train_state(out: str, mmap: bool = False) -> dict | None:
    """The training state of the checkpoint in `out`; None when there is none. Read with weights_only
    (a crafted file cannot run code), then checked to be the record a run saves (one line otherwise)."""
    path = os.path.join(out, STATE_FILE)
    if not os.path.isfile(path):
        return None
    try:
        state = torch.load(path, weights_only=True, mmap=mmap)
    except Exception as e:  # a truncated or foreign file: torch raises several kinds
        raise SystemExit(f"{path}: not a readable training state ({why(e)}); start a new run in another --out") \
            from None
    wrong = state_problem(state)
    if wrong:
        raise SystemExit(f"{path}: not a training state of this project ({wrong}); start a new run in another --out")
    return state


def state_problem(state) -> str | None:
    """What makes `state` other than the record lifecycle.train_state saves; None when it is one.

    >>> state_problem(dict(step=3, args=dict(steps=5), totals={})), state_problem([1, 2])
    (None, 'a list, not a dict')
    >>> state_problem(dict(step="3", args=dict(steps=5), totals={}))
    "'step' is a str, not a whole number"
    """
    if not isinstance(state, dict):
        return f"a {type(state).__name__}, not a dict"
    for key, kind in (("args", dict), ("totals", dict), ("checks", dict)):
        if key in state and not isinstance(state[key], kind) or key in ("args", "totals") and key not in state:
            return f"{key!r} is {'missing' if key not in state else 'a ' + type(state[key]).__name__}, not a dict"
    for key, value in (("step", state.get("step")), ("args.steps", state["args"].get("steps"))):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"{key!r} is a {type(value).__name__}, not a whole number"
    return None


def code_version(root: str | None = None) -> str:
    """A short hash of the project's code (the scripts at the top and comt/): which code made a run."""
    import glob
    import hashlib
    root, h = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__))), hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(root, "*.py")) + glob.glob(os.path.join(root, "comt", "*.py"))):
        with open(path, "rb") as f:
            h.update(os.path.relpath(path, root).encode() + f.read())
    return h.hexdigest()[:12]


def checkpoint_id(path: str) -> str:
    """A cheap identity of a checkpoint directory's weights and config (their names, sizes and
    modification times): a run records the one it started from, so that a later look can tell whether
    that directory was rewritten since (a retrained stage, a rebuilt base)."""
    import hashlib
    h = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        if name.endswith(".safetensors") or name == "config.json":
            st = os.stat(os.path.join(path, name))
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def pad_id(tok) -> int:
    """The id that fills batches and finished rows: the tokenizer's pad token, else its end of sequence."""
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def unwritable(path: str) -> str | None:
    """Why the file `path` cannot be written (its folder cannot be made or written, or it is a folder
    or a read-only file), found before any work is done; None when it can."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        return f"cannot create {folder} ({e.strerror})"
    if os.path.isdir(path) or not os.access(folder, os.W_OK) or (os.path.exists(path)
                                                                 and not os.access(path, os.W_OK)):
        return "not a file that can be written"
    return None


def why(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def check_checkpoint(path: str, flag: str, hint: str = ""):
    """The tokenizer of checkpoint directory `path`, once its config, tokenizer and weight files are
    known to be readable (the weights' headers only: cheap). Anything wrong (no such directory, a
    corrupted config.json, truncated weights, an architecture comt/model.py does not support) exits with
    one line naming the flag and the file. An unfinished run is used, with a warning first."""
    from safetensors import safe_open
    from transformers import AutoTokenizer

    from comt.model import ModelConfig
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        raise SystemExit(f"{flag} {path}: not a checkpoint directory (expected config.json, *.safetensors and "
                         f"tokenizer files{hint})")
    try:
        with open(config) as f:
            cfg = ModelConfig.from_hf_dict(json.load(f))
    except Exception as e:  # json and our own UnsupportedModelError alike
        raise SystemExit(f"{flag} {path}: cannot read config.json ({why(e)})") from None
    state = load_train_state(path, mmap=True) if flag != "--out" else None  # (--out: the run resumes itself)
    if state and state.get("step", 0) < state.get("args", {}).get("steps", 0):
        print(f"{flag} {path}: an unfinished run (stopped after step {state['step']} of {state['args']['steps']}); "
              f"using it as it is (finish it first with --out {path} --resume)", file=sys.stderr, flush=True)
    weights = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not weights:
        raise SystemExit(f"{flag} {path}: no *.safetensors weights")
    shapes = {}
    for name in weights:
        try:
            with safe_open(os.path.join(path, name), "pt") as f:
                shapes.update({k: f.get_slice(k).get_shape() for k in f.keys()})
        except Exception as e:  # a truncated file fails its header check
            raise SystemExit(f"{flag} {path}: cannot read {name} ({why(e)})") from None
    mismatch = config_mismatch(cfg, shapes)
    if mismatch:
        raise SystemExit(f"{flag} {path}: config.json does not describe its weights ({mismatch})")
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise SystemExit(f"{flag} {path}: cannot load the tokenizer ({why(e)})") from None


def config_mismatch(cfg, shapes: dict) -> str | None:
    """What of the config the weights' headers contradict (layer count, vocabulary and hidden size),
    found before a model of that config is built; None when they agree."""
    layers = {int(k.split(".")[2]) for k in shapes if k.startswith("model.layers.") and k.split(".")[2].isdigit()}
    if layers != set(range(cfg.num_hidden_layers)):
        return f"num_hidden_layers {cfg.num_hidden_layers}, the weights hold {len(layers)} layers"
    embed = list(shapes.get("model.embed_tokens.weight", []))
    if embed != [cfg.vocab_size, cfg.hidden_size]:
        return f"vocab_size x hidden_size {cfg.vocab_size} x {cfg.hidden_size}, the embedding is {embed or 'missing'}"
    return None


def load_model(path: str, device="cpu", dtype=torch.float32):
    """Transformer.from_pretrained of a directory check_checkpoint passed; what it still finds wrong
    (weights that do not match the config) is one line too."""
    from comt.model import Transformer
    try:
        return Transformer.from_pretrained(path, device=device, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as e:
        raise SystemExit(f"{path}: cannot load the model ({why(e)})") from None
