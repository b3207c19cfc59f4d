"""
What the scripts at the top of the repository share. Modules sit in layers and import only from
layers below their own (tests/test_layout.py walks the imports); rewards.py stays at the top of
the repository, where a student reads it first, but is a ground-floor module:

    0        comt (this file: the Python version check), flags (command-line flags and the settings
             records that own them)
    1        model (the decoder), rewards.py (judging and rewarding a completion), stats (paired
             differences between arms and their bootstrap intervals)
    2        common (devices, JSON logs, files written by replacing, checkpoint checks), tasks (the
             word problems, their texts and programs), show (marked completions)
    3        engine (batched sampling), parallel (torchrun, ranks, FSDP2 sharding), corpus (the base's
             pretraining documents and own plan forms), benchmarks (real data, --targets), report
             (the experiment's tables, reading and charts)
    4        training (the per-step math: token rows, the update, the books), evaluation (the greedy
             evaluation and its metrics), checkpoint (a run's kill-safe checkpoint on disk)
    5        lifecycle (a run's directory: claim, resume, set-up, the loop's bookkeeping, stop)
    scripts  sft_comt.py, ccrl.py, evaluate.py, base.py, teacher.py, experiment.py, bench.py (none
             imports another, except bench.py, which times the stages' own steps)

Importing the package first stops an older Python with one line instead of a traceback.
"""
import sys

REQUIRED = (3, 11)


def require_python(version) -> None:
    """Exit in one line on a Python older than REQUIRED (rewards.py's patterns need 3.11's possessive
    quantifiers; older versions fail on them while importing)."""
    if tuple(version[:2]) < REQUIRED:
        raise SystemExit(f"comt needs Python >= {REQUIRED[0]}.{REQUIRED[1]}; this is Python {version[0]}.{version[1]}")


require_python(sys.version_info)
