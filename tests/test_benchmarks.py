"""comt/benchmarks.py: real benchmarks, JSONL files and --targets, each refusal naming the file and line."""
import json
import os
import re
from fractions import Fraction

import pytest

from comt.benchmarks import (BENCHMARKS, canonical_answer, default_data_dir, load_problems, problems_for_cli,
                             read_targets)


def test_repeated_problem_ids_are_refused(tmp_path):
    from comt.benchmarks import problems_for_cli
    rows = [dict(id=0, question="What is 2 + 3?", answer="5"), dict(id=0, question="What is 4 + 4?", answer="8")]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit, match=r"d\.jsonl:2: id '0' repeats line 1"):
        problems_for_cli(str(data), 10, None, 0)
    targets = tmp_path / "t.jsonl"
    targets.write_text(json.dumps(dict(id="a", plan="Add them.")) + "\n" + json.dumps(dict(id="a", plan="x.")) + "\n")
    with pytest.raises(SystemExit, match=r"t\.jsonl:2: id 'a' repeats line 1"):
        read_targets(str(targets))


@pytest.mark.parametrize("row, words", [(dict(id="a", plan="Add 2 and 3."), "the plan has a digit"),
                                        (dict(id="a", plan=["Add them."]), "'plan' must be a text, not list")])
def test_targets_a_comt_run_cannot_use_are_refused(tmp_path, row, words):
    targets = tmp_path / "t.jsonl"
    targets.write_text(json.dumps(row) + "\n")
    with pytest.raises(SystemExit, match=words):
        read_targets(str(targets))


def test_empty_data_is_refused(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(SystemExit, match=r"empty\.jsonl: no problems in it"):
        problems_for_cli(str(empty), 10, None, 0)


FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


DATA = default_data_dir()


def benchmark_files():
    if not os.path.isdir(DATA):
        return []
    return [(b, f[:-6]) for b in BENCHMARKS if os.path.isdir(os.path.join(DATA, b))
            for f in sorted(os.listdir(os.path.join(DATA, b))) if f.endswith(".jsonl")]


@pytest.mark.skipif(not os.path.isdir(DATA), reason=f"benchmark data folder {DATA} is absent")
@pytest.mark.parametrize("name, split", benchmark_files())
def test_loader_parses_every_row_of_every_benchmark(name, split):
    path = os.path.join(DATA, name, split + ".jsonl")
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    probs = load_problems(f"{name}:{split}")
    assert len(probs) == len(rows) > 0
    for p, row in zip(probs, rows):
        assert p.question == row["question"] and p.id == row["id"] and p.source == name
        assert float(p.answer) == pytest.approx(float(row["answer"]))


@pytest.mark.skipif(not os.path.isdir(DATA), reason=f"benchmark data folder {DATA} is absent")
def test_every_benchmark_name_has_a_default_split():
    expected = {"gsm8k": "test", "svamp": "test", "asdiv": "test", "mawps": "test", "tabmwp": "test1k",
                "gsm_hard": "sample", "gsm_symbolic": "sample"}
    for name, split in expected.items():
        assert [p.id for p in load_problems(name, n=3)] == [p.id for p in load_problems(f"{name}:{split}", n=3)]


@pytest.mark.skipif(not os.path.isdir(os.path.join(DATA, "gsm8k")), reason=f"{DATA}/gsm8k is absent")
def test_gsm8k_annotations_become_intermediates():
    p = load_problems("gsm8k:train", n=1)[0]  # Natalia: 48/2=24, 48+24=72
    assert p.intermediates == [24.0, 72.0] and p.answer == "72"


def test_raw_gsm8k_rows_are_parsed():
    probs = load_problems(os.path.join(FIXTURES, "raw_gsm8k.jsonl"))
    assert [p.answer for p in probs] == ["18", "1200", "-4"]
    assert probs[0].intermediates == [16.0, 9.0, 18.0]
    assert probs[1].intermediates == [1200.0]
    assert "####" in probs[0].solution


def test_user_jsonl_in_the_normalised_shape(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"id": "a", "question": "What is 2 + 3?", "answer": "5"}) + "\n\n"
                    + json.dumps({"id": "b", "question": "Half of 9?", "answer": 4.5}) + "\n")
    probs = load_problems(str(path))
    assert [(p.id, p.answer) for p in probs] == [("a", "5"), ("b", "4.5")]


@pytest.mark.parametrize("line, words", [
    ('{"question": "q", "answer": "3"', "not valid JSON"),
    ('{"question": "q"}', "needs a string 'question' and an 'answer'"),
    ('{"question": "q", "answer": "none"}', "'none' is not one number"),
    ('{"question": "q", "answer": "12 or 13"}', "'12 or 13' is not one number"),
    ('{"question": "q", "answer": "1,23"}', "'1,23' is not one number"),
    ('{"question": "q", "answer": "1e400"}', "'1e400' is not one number"),
    ('{"question": "q", "answer": "3/0"}', "'3/0' is not one number"),
])
def test_malformed_line_names_file_and_line(tmp_path, line, words):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "fine", "answer": "1"}\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"bad\.jsonl:2: .*{re.escape(words)}"):
        load_problems(str(path))


@pytest.mark.parametrize("given, canonical", [
    ("1,234", "1234"), ("$5.00", "5"), ("72.0", "72"), (" -3 ", "-3"), ("−3", "-3"), ("+7", "7"),
    ("3/4", "0.75"), ("1/3", "1/3"), ("1e+20", "100000000000000000000"), ("2.5E-3", "0.0025"), ("45%", "45"),
    ("12469088.666666666", "12469088.666666666"), ("126647307", "126647307"), (0.1, "0.1"), (72, "72"),
])
def test_gold_answers_are_read_exactly(given, canonical):
    assert canonical_answer(given) == canonical


def test_unknown_data_names_what_is_accepted():
    with pytest.raises(ValueError, match="gsm8k"):
        load_problems("gsm9k")


def test_hub_spec_reads_a_real_datasets_repository(tmp_path):
    """hub:NAME:CONFIG:SPLIT through the real `datasets` library, on a repository laid out like
    openai/gsm8k (a README whose YAML names the configs and their files), kept on local disk."""
    repo = tmp_path / "gsm8k_like"
    (repo / "main").mkdir(parents=True)
    (repo / "README.md").write_text("---\nconfigs:\n- config_name: main\n  data_files:\n  - split: test\n"
                                    "    path: main/test.jsonl\n---\n")
    rows = [{"question": "What is 6 * 7?", "answer": "6*7 = <<6*7=42>>42\n#### 42"},
            {"question": "Half of 9?", "answer": "9/2 = <<9/2=4.5>>4.5\n#### 4.5"}]
    (repo / "main" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    probs = load_problems(f"hub:{repo}:main:test")
    assert [(p.answer, p.intermediates) for p in probs] == [("42", [42]), ("4.5", [Fraction(9, 2)])]
    assert probs[0].source == str(repo) and probs[1].question == "Half of 9?"
    with pytest.raises(ValueError, match="hub:NAME"):
        load_problems("hub:onlyname")
