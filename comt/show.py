"""
See the confidence: a completion with every numeric step's result marked by the model's confidence
in it and by whether it is right, as the CCRL reward reads it.

    python evaluate.py --ckpt runs/sft_comt runs/ccrl --show 3     # 3 problems per split, both models
    python ccrl.py --log-examples 2                                  # 2 samples per logged step

A mark covers exactly the tokens whose log-probs gave the step's confidence in rewards.judge (the
tokens overlapping the result's characters; with a tokenizer that merges digits with neighbours,
the neighbours are marked too, because the confidence read them). Three renderings of one mark:

    plain (files, pipes)   21[0.97 ✗]
    terminal               21 on a background from pale (unsure) to orange (sure), green if right,
                           red if wrong, then [0.97 ✗]
    HTML                   the same colours in a self-contained page (inline CSS, no scripts);
                           the model's text is escaped

Under each completion: the answer's verdict, the plan's (right or wrong, followed or not; synthetic
problems) and the parts of the reward it was judged with (rewards.judge: correct + lambda x
confidence term for CCRL, beside the outcome reward; minus the plan term where one applies). show
renders a Judgement; it never judges: ccrl.py's --log-examples writes the very record the update
used, evaluate.py --show the one its tables count.
"""
import base64
import html
import os
import unicodedata
from dataclasses import dataclass

from rewards import Judgement

# -----------------------------------------------------------------------------
# Marks: which characters, which confidence, right or wrong


@dataclass
class Mark:
    start: int  # characters [start, end) of the text: the whole tokens the confidence read
    end: int
    conf: float
    right: bool


def marks(j: Judgement) -> list[Mark]:
    """One mark per numeric step, over the characters of the tokens its confidence came from."""
    out = []
    for s, conf, right in zip(j.steps, j.step_confs, j.step_rights):
        a, b = s.tokens
        if b > a:
            out.append(Mark(j.char_ends[a - 1] if a else 0, j.char_ends[b - 1], conf, right))
    return out


def label(m: Mark) -> str:
    return f"[{m.conf:.2f} {'✓' if m.right else '✗'}]"


def pieces(text: str, ms: list[Mark]):
    """(text piece, its Mark or None) in order; marks never overlap (steps are disjoint)."""
    pos = 0
    for m in ms:
        if m.start > pos:
            yield text[pos:m.start], None
        yield text[max(m.start, pos):m.end], m
        pos = max(pos, m.end)
    if pos < len(text):
        yield text[pos:], None


# -----------------------------------------------------------------------------
# Renderings

HEAT = ((0.5, 252), (0.8, 230), (0.95, 222), (1.01, 215))  # confidence below -> 256-colour background


def heat(conf: float) -> int:
    return next(colour for bound, colour in HEAT if conf < bound)


def visible(text: str) -> str:
    """Model and data text made safe to print: control and format characters other than newline and
    tab (a terminal escape sequence, a right-to-left override) written out as \\xNN / \\uNNNN.

    >>> visible("ok\\x1b]0;title\\x07 \\u202e\\n")
    'ok\\\\x1b]0;title\\\\x07 \\\\u202e\\n'
    """
    return "".join(c if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf") else
                   (f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}") for c in text)


def render_plain(text: str, ms: list[Mark]) -> str:
    return "".join(visible(p) + label(m) if m else visible(p) for p, m in pieces(text, ms))


def render_ansi(text: str, ms: list[Mark]) -> str:
    fg = lambda m: "32" if m.right else "31"
    return "".join(f"\x1b[1;{fg(m)};48;5;{heat(m.conf)}m{visible(p)}\x1b[0m\x1b[2m{label(m)}\x1b[0m" if m
                   else visible(p) for p, m in pieces(text, ms))


def render_html(text: str, ms: list[Mark]) -> str:
    out = []
    for p, m in pieces(text, ms):
        if m is None:
            out.append(html.escape(p))
        else:
            out.append(f'<span class="step {"ok" if m.right else "bad"}" style="background: rgba(255, 140, 0, '
                       f'{m.conf:.2f})">{html.escape(p)}</span><sub>{html.escape(label(m))}</sub>')
    return "".join(out)


# -----------------------------------------------------------------------------
# One example: question, marked completion, verdict, reward parts


@dataclass
class Example:
    name: str  # checkpoint (or run) that wrote it
    question: str
    gold: str
    judged: Judgement  # the completion as it was judged, reward included
    plan: dict | None = None  # tasks.plan_verdict of the completion (problems with a program)
    unrecorded: bool = False  # the checkpoint records no reward (not a ccrl.py run): parts at the flags' defaults


def plan_words(v: dict | None) -> str:
    """'; plan right, followed' and the like ('' without a verdict)."""
    if v is None:
        return ""
    words = f"; plan {'right' if v['plan_correct'] else 'wrong'}, {'followed' if v['plan_followed'] else 'not followed'}"
    return words + (f" ({v['wrong_kind']})" if v.get("wrong_kind") else "")


def reward_words(j: Judgement, unrecorded: bool = False) -> str:
    """The reward's parts as the judgement computed them, with the settings it was judged with."""
    plan = f" - plan {-j.plan_part:g}" if j.plan_part else ""
    parts = "reward parts (no reward recorded with this checkpoint; ccrl.py's defaults)" if unrecorded else \
        "reward parts"
    if j.scoring.reward == "outcome":
        return (f"{parts}: correct {int(j.correct)}{plan} = outcome {j.reward:+.3f} (confidence term "
                f"{j.conf_term:+.3f}, not rewarded)")
    return (f"{parts}: correct {int(j.correct)} + {j.scoring.conf_weight} x confidence term {j.conf_term:+.3f}{plan} = "
            f"CCRL {j.reward:+.3f}; outcome reward {int(j.correct)}")


def verdict(e: Example) -> str:
    return (f"answer {'right' if e.judged.correct else 'wrong'} (gold {e.gold}){plan_words(e.plan)}; "
            f"{reward_words(e.judged, e.unrecorded)}")


def render_text(e: Example, ansi: bool) -> str:
    body = (render_ansi if ansi else render_plain)(e.judged.text, marks(e.judged)).strip("\n")
    return f"--- {e.name}\n{body}\n    {verdict(e)}"


HOW_TO_READ = """Each block is one problem and, under it, what each checkpoint wrote for it (greedy). Every
number a step computes (<code>expr = result</code>) is shaded by the model's confidence in it: the
geometric mean of the probabilities of the tokens that wrote it, pale when unsure, orange when sure.
A green number is right (it is one of the problem's gold intermediate values, or its arithmetic
recomputes where the problem has none), a red one wrong; the small label repeats the confidence and
the verdict. A sure red number is the overconfident error CCRL penalises: its reward is the answer's
correctness plus lambda times the mean over steps of +confidence (a right step of a right answer),
0 (a right step of a wrong answer) or -confidence (a wrong step), each gold step never reached
counting -1. Under each completion: whether its plan is right (its operations are the problem's program) and
whether its execution follows that plan."""

CSS = """body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ccc}
.q{background:#f4f4f4;padding:.6em;white-space:pre-wrap}
.ex{display:grid;grid-template-columns:repeat(auto-fit,minmax(26em,1fr));gap:1em;margin:.8em 0 2em}
.ex>div{border:1px solid #ddd;padding:.6em} .ex h3{font-size:1em;margin:0 0 .4em}
pre{white-space:pre-wrap;font-size:.92em;margin:0}
.step{font-weight:bold;padding:0 .1em;border-radius:3px} .ok{color:#106010;border-bottom:3px solid #1a8f1a}
.bad{color:#b00000;border-bottom:3px solid #d00000}
sub{color:#555;font-size:.75em} .v{color:#444;font-size:.85em;margin-top:.5em}
img{max-width:49%}"""


def data_uri(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def html_page(title: str, blocks: list[tuple[str, str, list[Example]]], images: list[str],
              notes: list[str] = ()) -> str:
    """blocks: (split, question, examples of that question, one per checkpoint); notes: lines under the
    title (evaluate.py: the reward each checkpoint is judged with)."""
    parts = [f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title><style>{CSS}</style>",
             f"<h1>{html.escape(title)}</h1><p>{HOW_TO_READ}</p>"] + [f"<p>{html.escape(n)}</p>" for n in notes]
    parts += [f'<img src="{data_uri(p)}" alt="{html.escape(os.path.basename(p))}">' for p in images]
    split_now = None
    for split, question, exs in blocks:
        if split != split_now:
            parts.append(f"<h2>{html.escape(split)}</h2>")
            split_now = split
        parts.append(f'<div class="q">{html.escape(question)}</div><div class="ex">')
        for e in exs:
            parts.append(f"<div><h3>{html.escape(e.name)}</h3><pre>{render_html(e.judged.text, marks(e.judged)).strip()}</pre>"
                         f'<div class="v">{html.escape(verdict(e))}</div></div>')
        parts.append("</div>")
    return "\n".join(parts) + "\n"


def append_examples(path, examples: list[Example], step: int):
    """Append a training step's examples (ccrl.py --log-examples) to the file `path`, steps marked."""
    if examples:
        with open(path, "a") as f:
            f.write("".join(f"=== step {step}: {visible(e.question)}\n{render_text(e, ansi=False)}\n"
                            for e in examples))


if __name__ == "__main__":  # a library of evaluate.py and ccrl.py; run alone it explains itself
    import argparse
    argparse.ArgumentParser(prog="python -m comt.show", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    print(__doc__.strip())
