import subprocess
import sys

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from comt.engine import Engine
from comt.model import ModelConfig, Transformer
from conftest import HF_CONFIGS, ROOT, make_hf_model, one_line, ragged_batch, randomize_

LENGTHS = [7, 1, 12, 4, 9, 12, 2, 5, 10]  # >= 8 prompts of different lengths
NEW = 12


@pytest.fixture
def pair(kind, tmp_path):
    """(transformers model, our model loaded from its checkpoint, vocab size)."""
    hf = make_hf_model(kind)
    hf.save_pretrained(tmp_path)
    return hf, Transformer.from_pretrained(str(tmp_path)), HF_CONFIGS[kind]["vocab_size"]


def hf_greedy(hf, prompt, new_tokens):
    out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                      do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                      eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def test_greedy_matches_transformers_generate_row_by_row(pair):
    hf, ours, vocab = pair
    _, _, prompts = ragged_batch(LENGTHS, vocab)
    out = Engine(ours).generate(prompts, max_new_tokens=NEW, greedy=True)
    assert out.tokens.shape == (len(prompts), NEW)
    for i, p in enumerate(prompts):
        assert out.tokens[i].tolist() == hf_greedy(hf, p, NEW), f"row {i} (prompt length {len(p)})"


def teacher_forced_logprobs(model, prompts, out, temperature):
    """log softmax(logits / T) of every sampled token, from one forward over prompt + completion."""
    rows = []
    for r in range(out.tokens.shape[0]):
        p = prompts[out.prompt_index[r]]
        c = out.tokens[r][out.mask[r]].tolist()
        with torch.no_grad():
            logits = model(torch.tensor([p + c]))[0, len(p) - 1:-1]  # (len(c),V)
        lp = (logits / temperature).log_softmax(-1).gather(-1, torch.tensor(c)[:, None])[:, 0]
        rows.append(lp)
    return rows


def test_sampled_logprobs_match_teacher_forced_forward(pair):
    _, ours, vocab = pair
    _, _, prompts = ragged_batch(LENGTHS[:4], vocab)
    out = Engine(ours).generate(prompts, num_samples=3, max_new_tokens=NEW, temperature=0.7,
                                stop_tokens=[5, 9], seed=0)
    ref = teacher_forced_logprobs(ours, prompts, out, 0.7)
    for r, lp in enumerate(ref):
        assert torch.allclose(out.logprobs[r][out.mask[r]], lp, atol=1e-4), f"row {r}"
        assert (out.logprobs[r][~out.mask[r]] == 0).all()


def test_top_p_samples_only_from_the_nucleus(pair):
    _, ours, vocab = pair
    _, _, prompts = ragged_batch(LENGTHS[:3], vocab)
    top_p = 0.3
    out = Engine(ours).generate(prompts, num_samples=4, max_new_tokens=6, temperature=1.0,
                                top_p=top_p, seed=0)
    for r in range(out.tokens.shape[0]):
        p, c = prompts[out.prompt_index[r]], out.tokens[r].tolist()
        with torch.no_grad():
            probs = ours(torch.tensor([p + c]))[0, len(p) - 1:-1].softmax(-1)
        for t, tok in enumerate(c):
            mass_above = probs[t][probs[t] > probs[t, tok]].sum()
            assert mass_above < top_p  # tok is inside the smallest set reaching top_p


def test_seed_reproduces_samples_and_another_seed_differs(pair):
    _, ours, vocab = pair
    _, _, prompts = ragged_batch(LENGTHS, vocab)
    engine = Engine(ours)
    kw = dict(num_samples=2, max_new_tokens=NEW, temperature=1.0)
    a, b = engine.generate(prompts, seed=3, **kw), engine.generate(prompts, seed=3, **kw)
    c = engine.generate(prompts, seed=4, **kw)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.tokens, c.tokens)


def test_group_samples_are_independent_draws(pair):
    _, ours, vocab = pair
    _, _, prompts = ragged_batch([6], vocab)
    out = Engine(ours).generate(prompts, num_samples=8, max_new_tokens=NEW, temperature=1.0, seed=0)
    assert len({tuple(t) for t in out.tokens.tolist()}) > 1


def test_num_samples_prefills_each_prompt_once(pair, monkeypatch):
    _, ours, vocab = pair
    _, _, prompts = ragged_batch(LENGTHS[:3], vocab)
    calls = []
    forward = ours.forward
    monkeypatch.setattr(ours, "forward", lambda ids, *a, **k: calls.append(tuple(ids.shape)) or forward(ids, *a, **k))
    out = Engine(ours).generate(prompts, num_samples=5, max_new_tokens=4, temperature=1.0, seed=0)
    assert out.tokens.shape[0] == 15
    prefills = [s for s in calls if s[1] > 1]
    assert prefills == [(3, max(LENGTHS[:3]))]  # one pass over the 3 prompts, not 15 rows
    assert all(s == (15, 1) for s in calls if s[1] == 1)


def test_rows_stop_independently_at_their_stop_tokens(pair):
    _, ours, vocab = pair
    _, _, prompts = ragged_batch(LENGTHS, vocab)
    engine = Engine(ours)
    free = engine.generate(prompts, max_new_tokens=NEW, greedy=True).tokens.tolist()
    # per-prompt stop sets: the token each row emits at step i % 5, so rows stop at different steps
    stops = [[row[i % 5]] for i, row in enumerate(free)]
    out = engine.generate(prompts, max_new_tokens=NEW, greedy=True, stop_tokens=stops)
    for r, row in enumerate(free):
        end = row.index(stops[r][0]) + 1  # first occurrence, stop token included
        assert out.lengths[r] == end and bool(out.stopped[r])
        assert out.tokens[r, :end].tolist() == row[:end]
        assert (out.tokens[r, end:] == engine.pad_id).all() and not out.mask[r, end:].any()
    assert len(set(out.lengths.tolist())) > 1


def test_max_new_tokens_is_respected(pair):
    _, ours, vocab = pair
    _, _, prompts = ragged_batch(LENGTHS, vocab)
    for m in (1, 5):
        out = Engine(ours).generate(prompts, num_samples=2, max_new_tokens=m, temperature=1.0, seed=0)
        assert out.tokens.shape == (len(prompts) * 2, m) and (out.lengths == m).all()
        assert not out.stopped.any()


def test_bad_prompts_are_refused(pair):
    _, ours, vocab = pair
    engine = Engine(ours)
    with pytest.raises(ValueError, match="at least one token"):
        engine.generate([[1, 2], []])
    with pytest.raises(ValueError, match="token ids"):
        engine.generate([[1, vocab]])
    with pytest.raises(ValueError, match="exceeds the model's context"):
        engine.generate([[1, 2]], max_new_tokens=10_000)


def test_full_width_static_step_matches(pair, monkeypatch):
    """The CUDA graph replays `_step` over all T_max cache columns (masked), not just the
    filled ones; on CPU, force that path and check it samples exactly the same tokens."""
    _, ours, vocab = pair
    _, _, prompts = ragged_batch(LENGTHS, vocab)
    kw = dict(num_samples=2, max_new_tokens=NEW, temperature=1.0, stop_tokens=[5], seed=0)
    ref = Engine(ours, fused=False).generate(prompts, **kw)  # a graph captures the reference step
    step = Engine._step
    monkeypatch.setattr(Engine, "_step", lambda self, s, sampling, width=None: step(self, s, sampling))
    out = Engine(ours, fused=False).generate(prompts, **kw)
    assert torch.equal(out.tokens, ref.tokens) and torch.equal(out.mask, ref.mask)
    assert torch.allclose(out.logprobs, ref.logprobs, atol=1e-5)


def test_banned_tokens_are_never_drawn_and_logprobs_renormalise(pair):
    _, ours, vocab = pair
    _, _, prompts = ragged_batch(LENGTHS[:3], vocab)
    eng = Engine(ours)
    free = eng.generate(prompts, max_new_tokens=1, greedy=True)
    banned = sorted(set(free.tokens[:, 0].tolist()))  # every row's greedy first token
    out = eng.generate(prompts, max_new_tokens=1, greedy=True, banned_tokens=banned)
    for r, p in enumerate(prompts):
        with torch.no_grad():
            logits = ours(torch.tensor([p]))[0, -1]
        logits[banned] = float("-inf")
        assert out.tokens[r, 0].item() == logits.argmax().item()  # the best allowed token
        assert out.logprobs[r, 0].item() == pytest.approx(logits.log_softmax(-1).max().item(), abs=1e-4)
    sampled = eng.generate(prompts, num_samples=8, max_new_tokens=6, temperature=2.0, seed=0, banned_tokens=banned)
    assert not torch.isin(sampled.tokens[sampled.mask], torch.tensor(banned)).any()
    again = eng.generate(prompts, max_new_tokens=1, greedy=True)  # the ban does not outlive its call
    assert torch.equal(again.tokens, free.tokens)


def assert_same_samples(out, ref):
    assert torch.equal(out.tokens, ref.tokens) and torch.equal(out.mask, ref.mask)
    assert torch.equal(out.stopped, ref.stopped)
    torch.testing.assert_close(out.logprobs, ref.logprobs, atol=1e-5, rtol=0)


def test_fused_step_matches_the_reference_step(pair):
    """The fused decode step (the default off CUDA graphs) against decoding with Transformer.forward:
    the same greedy tokens, and at T = 0.7 the same samples with the same log-probs."""
    _, ours, vocab = pair
    _, _, prompts = ragged_batch(LENGTHS, vocab)
    for kw in (dict(greedy=True), dict(num_samples=3, temperature=0.7, stop_tokens=[5, 9], seed=0)):
        ref = Engine(ours, fused=False).generate(prompts, max_new_tokens=NEW, **kw)
        out = Engine(ours, fused=True).generate(prompts, max_new_tokens=NEW, **kw)
        assert out.logprobs.abs().sum() > 0
        assert_same_samples(out, ref)


def test_fused_step_with_output_and_mlp_biases():
    cfg = ModelConfig(model_type="llama", vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                      num_attention_heads=6, num_key_value_heads=3, attention_bias=True, mlp_bias=True)
    model = randomize_(Transformer(cfg)).eval()
    _, _, prompts = ragged_batch(LENGTHS[:5], cfg.vocab_size)
    kw = dict(num_samples=2, max_new_tokens=NEW, temperature=0.7, seed=1)
    assert_same_samples(Engine(model, fused=True).generate(prompts, **kw),
                        Engine(model, fused=False).generate(prompts, **kw))


def test_fused_step_decodes_the_current_weights(pair):
    """RL updates the weights in place between calls; the next call must sample from the new ones."""
    _, ours, vocab = pair
    _, _, prompts = ragged_batch(LENGTHS[:4], vocab)
    engine = Engine(ours, fused=True)
    before = engine.generate(prompts, max_new_tokens=NEW, greedy=True)
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.2 * torch.randn_like(p))
    after = engine.generate(prompts, max_new_tokens=NEW, greedy=True)
    assert not torch.equal(after.tokens, before.tokens)
    assert_same_samples(after, Engine(ours, fused=False).generate(prompts, max_new_tokens=NEW, greedy=True))


def test_dropping_stopped_rows_changes_no_sample(pair, monkeypatch):
    """Eager decoding continues with the live rows only once a quarter of the batch has stopped;
    the tokens, log-probs and stop flags are those of decoding every row to the end."""
    _, ours, vocab = pair
    _, _, prompts = ragged_batch(LENGTHS, vocab)
    step = Engine._step
    for kw in (dict(greedy=True), dict(num_samples=3, temperature=0.7, seed=0)):
        kw |= dict(max_new_tokens=NEW, stop_tokens=list(range(3, 30)))  # rows stop at many different steps
        ref = Engine(ours, drop_stopped=False).generate(prompts, **kw)
        rows = []
        monkeypatch.setattr(Engine, "_step",
                            lambda self, s, *a, **k: rows.append(len(s.rows)) or step(self, s, *a, **k))
        out = Engine(ours).generate(prompts, **kw)
        monkeypatch.undo()
        assert_same_samples(out, ref)
        assert len(set(ref.lengths.tolist())) > 2 and ref.stopped.any()
        assert min(rows) < ref.tokens.shape[0]  # rows were dropped on the way


def test_engine_cli_refuses_empty_and_over_long_prompts(model_dir):
    for prompt, words in (("  ", "--prompt is empty"), ("apples " * 2000, "longer than the")):
        res = subprocess.run([sys.executable, "-m", "comt.engine", "--model", model_dir, "--prompt", prompt], cwd=ROOT,
                             capture_output=True, text=True)
        assert words in one_line(res)


TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}<|assistant|>"


def tiny_checkpoint(path, chat: bool):
    """A word-level tokenizer and a random model with its vocabulary, saved as a HF directory."""
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    words = "what is three plus four seven the answer apples bags each".split()
    tok.train_from_iterator([" ".join(words)] * 4, trainers.WordLevelTrainer(
        special_tokens=["<pad>", "<unk>", "<|end|>", "<|user|>", "<|assistant|>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="<|end|>")
    if chat:
        fast.chat_template = TEMPLATE
    fast.save_pretrained(path)
    cfg = ModelConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, eos_token_id=fast.eos_token_id)
    torch.manual_seed(0)
    Transformer(cfg).init_weights(std=0.5).save_pretrained(str(path))
    return fast


def run_cli(path, *args):
    cmd = [sys.executable, "-m", "comt.engine", "--model", str(path), "--prompt", "what is three plus four",
           "--greedy", "--max-new-tokens", "6", "--device", "cpu", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def expected_text(path, tok, prompt_ids):
    out = Engine(Transformer.from_pretrained(str(path))).generate(
        [prompt_ids], max_new_tokens=6, greedy=True, stop_tokens=[tok.eos_token_id])
    return tok.decode(out.tokens[0][out.mask[0]].tolist(), skip_special_tokens=True).strip()


@pytest.mark.cli
def test_cli_prints_the_greedy_completion(tmp_path):
    tok = tiny_checkpoint(tmp_path, chat=False)
    ids = tok("what is three plus four")["input_ids"]
    assert run_cli(tmp_path) == expected_text(tmp_path, tok, ids)


@pytest.mark.cli
def test_cli_applies_the_chat_template(tmp_path):
    tok = tiny_checkpoint(tmp_path, chat=True)
    chat_ids = tok("<|user|> what is three plus four <|end|> <|assistant|>")["input_ids"]
    assert run_cli(tmp_path) == expected_text(tmp_path, tok, chat_ids)
    plain = tok("what is three plus four")["input_ids"]
    assert run_cli(tmp_path, "--no-chat") == expected_text(tmp_path, tok, plain)
