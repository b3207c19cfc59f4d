"""Confidence-marked completions: the marks sit on the tokens the reward read, HTML escapes the
model's text, output that is not a terminal carries no colour codes."""
import json
import math
import os
import re
import shutil
import subprocess
import sys
from fractions import Fraction

import pytest
from test_rewards import digit_bpe

import ccrl
import evaluate
from comt.show import Example, html_page, marks, render_ansi, render_html, render_plain, verdict
from comt.tasks import Problem
from conftest import stopped
from rewards import RewardSettings, judge, token_char_ends

TEXT = "Solution:\ntotal = 120 + 35 = 155\nrest = 155 - 40 = 116\nAnswer: 116"
PROBLEM = Problem(id="x", question="q", answer="115", intermediates=[Fraction(155), Fraction(115)])


def example(name, p, text, logprobs, char_ends, **settings) -> Example:
    return Example(name, p.question, p.answer, judge(text, logprobs, char_ends, p.answer, p.intermediates,
                                                      RewardSettings(**settings)))


@pytest.mark.parametrize("which", ["tiny", "merging_bpe"])
def test_marks_sit_on_exactly_the_tokens_whose_confidence_the_reward_used(which, tok):
    t = tok if which == "tiny" else digit_bpe()  # digit_bpe writes " 15" + "5": the space is read too
    enc = t(TEXT, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    lps = [-0.01 * (i + 1) for i in range(len(ids))]  # a different log-prob for every token
    e = example("m", PROBLEM, TEXT, lps, [b for _, b in offsets])
    results = [(TEXT.index("= 155") + 2, TEXT.index("= 155") + 5), (TEXT.index("= 116") + 2, TEXT.index("= 116") + 5)]
    assert len(marks(e.judged)) == len(results)
    for m, (a, b) in zip(marks(e.judged), results):
        read = [i for i, (s, f) in enumerate(offsets) if s < b and f > a]  # tokens overlapping the digits
        assert (m.start, m.end) == (offsets[read[0]][0], offsets[read[-1]][1])
        assert m.conf == pytest.approx(math.exp(sum(lps[i] for i in read) / len(read)))
    assert [m.right for m in marks(e.judged)] == [True, False]  # 155 is a gold value, 116 is not
    assert e.judged.step_confs == [m.conf for m in marks(e.judged)]  # the numbers the reward used
    plain = render_plain(TEXT, marks(e.judged))
    assert plain.replace(f"[{marks(e.judged)[0].conf:.2f} ✓]", "").replace(f"[{marks(e.judged)[1].conf:.2f} ✗]", "") == TEXT
    assert plain.index("✓]") == marks(e.judged)[0].end + len(f"[{marks(e.judged)[0].conf:.2f} ")


def test_reward_parts_add_up(tok):
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    e = example("m", PROBLEM, TEXT, [-0.01 * (i + 1) for i in range(len(ids))], token_char_ends(tok, ids), conf_weight=0.5)
    term = (0 - marks(e.judged)[1].conf) / 2  # the answer is wrong: 0 for its right step, -c for the wrong one
    assert e.judged.conf_term == pytest.approx(term) and e.judged.reward == pytest.approx(0 + 0.5 * term)
    assert f"correct 0 + 0.5 x confidence term {term:+.3f} = CCRL {0.5 * term:+.3f}; outcome reward 0" in verdict(e)


def test_html_escapes_the_model_text_and_runs_no_script(tok):
    text = '<script>alert("x")</script> & a = 1 + 2 = 3'
    ids = tok(text, add_special_tokens=False)["input_ids"]
    e = example("<b>ckpt</b>", PROBLEM, text, [-0.1] * len(ids), token_char_ends(tok, ids))
    frag = render_html(text, marks(e.judged))
    assert "<script" not in frag and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp;" in frag
    page = html_page("t", [("test", "<i>question</i>", [e])], [])
    assert "<script" not in page.lower() and "&lt;i&gt;question&lt;/i&gt;" in page and "&lt;b&gt;ckpt" in page
    assert "http" not in page  # nothing fetched from the network


@pytest.mark.cli
def test_terminal_colours_only_on_a_terminal(model_dir, tmp_path, capsys, tok):
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    e = example("m", PROBLEM, TEXT, [-0.1] * len(ids), token_char_ends(tok, ids))
    assert "\x1b[" in render_ansi(TEXT, marks(e.judged)) and "\x1b[" not in render_plain(TEXT, marks(e.judged))
    out, other = str(tmp_path / "e.json"), str(tmp_path / "other")
    shutil.copytree(model_dir, other)
    evaluate.main(["--ckpt", model_dir, other, "--splits", "test", "--n", "3", "--max-new-tokens", "24",
                   "--show", "2", "--json", out, "--no-plots"])
    printed = capsys.readouterr().out  # captured: not a TTY
    assert "\x1b[" not in printed
    assert printed.count("=== test, problem") == 2 and printed.count("reward parts") == 4
    with open(str(tmp_path / "e_examples.html")) as f:
        assert f.read().count('<div class="q">') == 2


@pytest.mark.cli
def test_ccrl_logs_marked_examples_per_step(model_dir, tmp_path):
    out, cut = str(tmp_path / "o"), str(tmp_path / "cut")
    run = ["--init", model_dir, "--n-train", "16", "--steps", "2", "--prompts-per-step", "2", "--group-size", "2",
           "--max-new-tokens", "12", "--eval-n", "0", "--log-examples", "2", "--save-every", "1"]
    ccrl.main([*run, "--out", out])
    with open(os.path.join(out, "examples.txt")) as f:
        text = f.read()
    stopped(ccrl.main, [*run, "--out", cut, "--stop-at", "1"])
    with open(os.path.join(cut, "examples.txt"), "a") as f:
        f.write("=== step 1: written, then killed before the checkpoint\n")
    ccrl.main(["--out", cut, "--resume"])
    with open(os.path.join(cut, "examples.txt")) as f:
        assert f.read() == text  # cut back to the checkpoint, then the same samples again
    assert text.count("=== step 0: ") == 2 and text.count("=== step 1: ") == 2 and "--- problem " in text
    assert text.count("reward parts: correct") == 4 and "\x1b[" not in text
    with open(os.path.join(out, "log.jsonl")) as f:
        assert json.loads(f.readlines()[-1])["summary"]


@pytest.mark.cli
@pytest.mark.parametrize("reward", ["ccrl", "outcome"])
def test_logged_reward_parts_are_those_the_update_used(model_dir, tmp_path, monkeypatch, reward):
    """--log-examples writes the judgement the update used, under a non-default reward, confidence
    form, weight and plan term: each logged reward is the one group_advantages received, and its
    printed parts add up to it."""
    used, real = [], ccrl.group_advantages
    monkeypatch.setattr(ccrl, "group_advantages", lambda r, mode: used.append(r.clone()) or real(r, mode))
    out = str(tmp_path / "o")
    ccrl.main(["--init", model_dir, "--out", out, "--n-train", "16", "--steps", "2", "--prompts-per-step", "2",
               "--group-size", "2", "--max-new-tokens", "16", "--eval-n", "0", "--log-examples", "2",
               "--reward", reward, "--conf-form", "brier", "--conf-weight", "0.7", "--plan-weight", "0.5"])
    with open(os.path.join(out, "examples.txt")) as f:
        lines = [line for line in f if "reward parts:" in line]
    assert len(lines) == 4 and len(used) == 2
    for line, r in zip(lines, [rs[p, 0].item() for rs in used for p in range(2)]):
        c, term = int(re.search(r"correct (\d)", line)[1]), float(re.search(r"confidence term ([-+]\d+\.\d+)", line)[1])
        plan = -0.5 if " - plan 0.5 " in line else 0.0
        logged = float(re.search(r"= (?:CCRL|outcome) ([-+]\d+\.\d+)", line)[1])
        assert logged == pytest.approx(r, abs=5e-4)  # the reward the update used
        parts = c + plan + (0.7 * term if reward == "ccrl" else 0.0)
        assert logged == pytest.approx(parts, abs=2e-3)  # (printed to 3 decimals)
        assert (f"= {reward.upper() if reward == 'ccrl' else reward} ") in line


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_printed_model_text_shows_control_characters(capsys):
    from comt.show import Mark, render_ansi, render_plain
    text = "x = 2 + 2 = 4\x1b]0;owned\x07\x1b[2J"
    for render in (render_plain, render_ansi):
        shown = render(text, [Mark(12, 13, 0.9, True)])
        assert "\x07" not in shown and "\\x1b]0;owned\\x07\\x1b[2J" in shown
    r = subprocess.run([sys.executable, "-m", "comt.show", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("usage: python -m comt.show")
