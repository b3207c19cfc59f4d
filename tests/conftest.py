"""Shared test fixtures: tiny random configs of each supported model type, built with
`transformers` (the independent reference) and randomised so that every weight matters."""
import contextlib
import hashlib
import json
import os
import shutil
import socket

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import subprocess
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# One config per supported type, each exercising that type's peculiarities.
HF_CONFIGS = {
    # Llama-3 rope scaling (original context small enough that all three frequency bands occur),
    # untied embeddings, GQA 4:2.
    "llama": dict(model_type="llama", vocab_size=128, hidden_size=64, intermediate_size=96,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
                  rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                    high_freq_factor=4.0, original_max_position_embeddings=64),
                  tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
    # q/k/v bias, tied embeddings, GQA 4:1.
    "qwen2": dict(model_type="qwen2", vocab_size=128, hidden_size=64, intermediate_size=96,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                  max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=1000000.0,
                  tie_word_embeddings=True, use_sliding_window=False, bos_token_id=1, eos_token_id=2),
    # q/k RMSNorm, head_dim decoupled from hidden_size / heads, untied.
    "qwen3": dict(model_type="qwen3", vocab_size=128, hidden_size=64, intermediate_size=96,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                  max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=1000000.0,
                  tie_word_embeddings=False, use_sliding_window=False, bos_token_id=1, eos_token_id=2),
}
MODEL_TYPES = list(HF_CONFIGS)


def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.1):
    """Give every parameter (norm gains and biases included) a distinct random value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * std
            p.copy_(1.0 + noise if name.endswith("norm.weight") else noise)
    return model


def make_hf_model(kind: str, seed: int = 0):
    from transformers import AutoConfig, AutoModelForCausalLM
    d = dict(HF_CONFIGS[kind])
    cfg = AutoConfig.for_model(d.pop("model_type"), **d)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    return randomize_(AutoModelForCausalLM.from_config(cfg), seed).eval()


def ragged_batch(lengths, vocab: int, seed: int = 0):
    """Left-padded (B,T) ids and mask for prompts of the given lengths (pad id 0)."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    prompts = []
    for i, n in enumerate(lengths):
        p = torch.randint(3, vocab, (n,), generator=g)
        ids[i, T - n:], mask[i, T - n:] = p, 1
        prompts.append(p.tolist())
    return ids, mask, prompts


@pytest.fixture(params=MODEL_TYPES)
def kind(request):
    return request.param


# -- the tiny default's tokenizer (a small corpus) and a tiny random model saved with it -----------
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_model(vocab: int, seed: int = 0):
    from comt.model import ModelConfig, Transformer
    cfg = ModelConfig(model_type="llama", vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512)
    torch.manual_seed(seed)
    return Transformer(cfg).init_weights()


@pytest.fixture(scope="session")
def docs():
    """(prefix, target) documents as the base is trained on them at its last step: the default shares."""
    from base import parse_args
    from comt.corpus import corpus_docs, split_questions
    defaults = parse_args([])
    return corpus_docs(3000, seed=0, worked=defaults.worked, story=defaults.story, exclude=split_questions(),
                       progress=1.0)


@pytest.fixture(scope="session")
def tok():
    from base import train_tokenizer
    from comt.corpus import corpus_docs
    return train_tokenizer(["".join(d) for d in corpus_docs(400, seed=0)], vocab_size=400)


@pytest.fixture(scope="session")
def chat_tok(tok):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    t = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tok.backend_tokenizer.to_str()), pad_token="<|pad|>")
    t.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
    t.eos_token = "<|im_end|>"
    t.chat_template = CHATML
    return t


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tok):
    """A tiny random model with the test tokenizer, saved as a checkpoint directory."""
    path = str(tmp_path_factory.mktemp("tiny"))
    model = tiny_model(len(tok))
    model.config.eos_token_id, model.config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def stopped(main, argv: list):
    """Run a stage's main(argv) that should save and stop before its last step: exit status STOPPED."""
    from comt.lifecycle import STOPPED
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == STOPPED, e.value.code


@contextlib.contextmanager
def locked_by_another_process(out: str):
    """Hold the run lock on `out` from a second process for the duration of the block."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = "import sys; from comt import lifecycle; lifecycle.lock_out(sys.argv[1]); print('locked', flush=True); " \
           "sys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", code, out],
                              cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.communicate("")


# -- running the stages in a subprocess, and reading their logs ------------------------------------
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def run_ccrl(args, check=True, expect=0):
    """ccrl.py in a subprocess; with check, its exit status must be `expect` (STOPPED: stopped early)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "ccrl.py", *args], cwd=ROOT, capture_output=True, text=True, env=env)
    assert not check or res.returncode == expect, f"ccrl.py: exit {res.returncode}:\n{res.stderr[-3000:]}"
    return res


def log_rows(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


SMALL = ["--n-train", "32", "--steps", "4", "--prompts-per-step", "2", "--group-size", "3", "--max-new-tokens", "12",
         "--eval-n", "4", "--eval-every", "2", "--lr", "1e-3", "--micro-batch", "4"]


# -- refusals, ranks and runs the tests of several modules share -------------------------------------


TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2")


def torchrun():
    return (*TORCHRUN, "--master_port", str(free_port()))


def one_line(res) -> str:
    """The refusal a process printed: one line on stderr beyond warnings (argparse's usage lines before
    its error line aside), a non-zero exit status and no traceback."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "Warning" not in ln and "warn(" not in ln]
    assert "Traceback" not in res.stderr and res.returncode != 0, res.stderr[-3000:]
    if res.returncode == 2 and ": error: " in lines[-1]:
        return lines[-1]
    assert len(lines) == 1, res.stderr[-3000:]
    return lines[0]


def without_file_mode_override() -> tuple:
    """A launcher prefix under which file modes bind as they bind a user who is not root."""
    if os.geteuid() != 0:
        return ()
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: file modes cannot be made to bind")
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")


SFT = ["--n-train", "48", "--batch", "8", "--micro-batch", "4", "--steps", "4", "--warmup", "1", "--log-every", "1",
       "--eval-n", "0", "--save-every", "2"]


RL = ["--n-train", "16", "--steps", "2", "--prompts-per-step", "2", "--group-size", "2", "--max-new-tokens", "12",
      "--eval-n", "0", "--save-every", "1"]


def tree_digest(path) -> dict:
    """sha256 of every file under path (symlinks by their target), by relative name."""
    out = {}
    for folder, _, files in os.walk(path):
        for name in files:
            p = os.path.join(folder, name)
            data = os.readlink(p).encode() if os.path.islink(p) else open(p, "rb").read()
            out[os.path.relpath(p, path)] = hashlib.sha256(data).hexdigest()
    return out


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)
