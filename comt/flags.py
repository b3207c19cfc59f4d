"""
Command-line flags, checked when the command line is parsed (a bad value is one line), and the
settings records that own them. A record's fields are its flags: each field is declared with
`flag(default, help, type=...)`, `add_flags` puts `--field-name` on a parser (its default and help
from the field), `from_flags` builds the record from the parsed arguments (or from the arguments a
checkpoint saved). So a setting has one name, from the flag to the code it acts in.

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Sampling:
    ...     group_size: int = flag(8, "completions per prompt", type=COUNT)
    >>> ap = argparse.ArgumentParser()
    >>> add_flags(ap, Sampling)
    >>> from_flags(Sampling, ap.parse_args(["--group-size", "4"]))
    Sampling(group_size=4)
"""
import argparse
import math
import operator
from dataclasses import MISSING, field, fields

BOUNDS = {"at least": operator.ge, "at most": operator.le, "above": operator.gt, "below": operator.lt}


def number(kind=float, lo=None, hi=None, above=None, below=None):
    """An argparse type: a finite `kind` (int or float) with lo <= x <= hi, x > above, x < below."""
    bounds = {words: b for words, b in zip(BOUNDS, (lo, hi, above, below)) if b is not None}

    def parse(text: str):
        try:
            x = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}")
        if not math.isfinite(x) or not all(BOUNDS[words](x, b) for words, b in bounds.items()):
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be " + " and ".join(
                ["finite"] * (kind is float) + [f"{words} {b}" for words, b in bounds.items()]))
        return x
    return parse


COUNT = number(int, lo=1)  # steps, batch sizes, lengths, intervals
NONNEG_INT = number(int, lo=0)  # sizes where 0 means "none"
POSITIVE = number(above=0)  # learning rates, temperatures, clip norms
NONNEG = number(lo=0)  # weights and coefficients where 0 means "off"
SHARE = number(lo=0, hi=1)  # probabilities and thresholds
SEED = number(int, lo=0, hi=2**32 - 1)  # what numpy's generator takes


def flag(default, help: str, **argparse_kwargs):
    """A settings record's field that is also the flag --<name>: its default, its help, and argparse's
    type or choices (a bool default makes a switch)."""
    return field(default=default, metadata=dict(help=help, **argparse_kwargs))


def add_flags(ap, record, title: str | None = None, only: tuple = (), **defaults):
    """Put the record's fields (`only` these, when given) on the parser as flags (under `title` in
    --help); `defaults` overrides a field's default for this parser (a stage with other budgets)."""
    group = ap.add_argument_group(title) if title else ap
    for f in (f for f in fields(record) if not only or f.name in only):
        kw = dict(f.metadata)
        default = defaults.get(f.name, f.default)
        if isinstance(f.default, bool):
            kw.setdefault("action", "store_true")
        group.add_argument("--" + f.name.replace("_", "-"), default=default, **kw)


def from_flags(record, args):
    """The record of the flags in `args` (a parsed namespace, or a dict such as a checkpoint's saved
    arguments); a flag missing from a dict takes the field's default."""
    get = args.get if isinstance(args, dict) else lambda k, d: getattr(args, k, d)
    return record(**{f.name: get(f.name, f.default) for f in fields(record) if f.default is not MISSING})
