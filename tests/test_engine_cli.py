import pytest
import subprocess
import sys

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from comt.engine import Engine
from comt.model import ModelConfig, Transformer

ROOT = __file__.rsplit("/tests/", 1)[0]
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
