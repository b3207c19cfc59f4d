"""
Small helpers every script shares: device and dtype choice, seeding, JSONL logging.
"""
import json
import random
import sys
import time

import numpy as np
import torch


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA GPU is visible to torch on this machine")
    return torch.device(name)


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


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """with Timer(device) as t: ...  -> t.seconds (waits for the GPU before reading the clock)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        synchronize(self.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.t0


def log_json(row: dict, path: str | None = None, stream=sys.stdout):
    """Print one JSON line (and append it to `path` when given)."""
    line = json.dumps(row, default=float)
    print(line, file=stream, flush=True)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
