"""
What the scripts at the top of the repository share. Modules sit in layers and import only from
layers below their own (tests/test_layout.py walks the imports); rewards.py stays at the top of
the repository, where a student reads it first, but is a ground-floor module:

    0        comt (this file: the Python version check)
    1        model (the decoder), rewards.py (judging and rewarding a completion), stats (paired
             differences between arms and their bootstrap intervals)
    2        common (flag types, devices, JSON logs, checkpoint checks), tasks (the word problems and
             their texts), show (marked completions)
    3        engine (batched sampling), training (ranks, token rows, schedule, sharding), corpus
             (the base's pretraining documents), report (the experiment's tables, reading and charts)
    4        evaluation (the greedy evaluation), lifecycle (a run's directory: claim, checkpoints,
             resume, stop)
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
