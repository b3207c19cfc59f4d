"""
One decoder-only transformer for the Llama family, readable top to bottom.

Supported `model_type`s (Hugging Face `config.json`):
    llama  -- Llama 2/3.x, SmolLM, TinyLlama, ... (rope_scaling: none, "linear" or "llama3")
    qwen2  -- Qwen2 / Qwen2.5 (bias on the q/k/v projections)
    qwen3  -- Qwen3 dense (RMSNorm on each query/key head before RoPE)
with tied or untied embeddings and grouped-query attention. Sliding-window attention, MoE and
every other architecture are refused with an error that names what is supported.

The network, per layer:  x += Attn(RMSNorm(x));  x += MLP(RMSNorm(x))
    Attn: q,k,v = Wq x, Wk x, Wv x  (Hkv <= H key/value heads, GQA)
          [qwen3: q,k = RMSNorm_head(q), RMSNorm_head(k)]
          q,k = RoPE(q,k, position);  softmax(q k^T / sqrt(D) + causal/padding mask) v;  Wo
    MLP:  W_down( silu(W_gate x) * W_up x )     (SwiGLU)
then a final RMSNorm and the LM head (optionally tied to the embedding).

Parameter names equal the Hugging Face ones (`model.layers.3.self_attn.q_proj.weight`, ...), so
`Transformer.from_pretrained(dir)` reads `config.json` + `*.safetensors` (one file or sharded) and
`save_pretrained(dir)` writes a directory `transformers.AutoModelForCausalLM` opens.

Two forward paths share the same weights:
  * `forward(ids, attention_mask)`: training/scoring over whole (padded) sequences. Positions come
    from the mask (left padding is fine); `logits_mask` returns logits only where asked, so a 150k
    vocabulary does not materialise logits nobody needs.
  * `forward(ids, ..., cache=KVCache, cache_pos=...)`: used by comt/engine.py; writes this call's keys and
    values into a preallocated cache at column(s) `cache_pos` and attends over the whole cache under
    a key-validity mask. Shapes never change between decode steps, so the step can be a CUDA graph.
"""
import json
import math
import os
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

SUPPORTED_TYPES = ("llama", "qwen2", "qwen3")
SUPPORTED_ROPE = ("default", "linear", "llama3")
ROPE_FIELDS = {"linear": ("factor",),  # the numbers each scaling reads
               "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}


class UnsupportedModelError(ValueError):
    pass


# -----------------------------------------------------------------------------
# Config


@dataclass
class ModelConfig:
    model_type: str = "llama"
    vocab_size: int = 1024
    hidden_size: int = 256
    intermediate_size: int = 704
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 0  # 0 -> hidden_size // num_attention_heads
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # {"rope_type": "llama3"|"linear", "factor": ..., ...}
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # llama/qwen3: bias on q,k,v,o; qwen2 always has q,k,v bias
    mlp_bias: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    hf: dict = field(default_factory=dict, repr=False)  # the config.json we were loaded from

    def __post_init__(self):
        if self.model_type not in SUPPORTED_TYPES:
            raise UnsupportedModelError(
                f"model_type {self.model_type!r} is not supported; supported: {', '.join(SUPPORTED_TYPES)}")
        self.head_dim = self.head_dim or self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise UnsupportedModelError("num_attention_heads must be a multiple of num_key_value_heads")
        rope_type = (self.rope_scaling or {}).get("rope_type", "default")
        if rope_type not in SUPPORTED_ROPE:
            raise UnsupportedModelError(
                f"rope type {rope_type!r} is not supported; supported: {', '.join(SUPPORTED_ROPE)}")
        needs = ROPE_FIELDS.get(rope_type, ())
        bad = [k for k in needs if isinstance(self.rope_scaling.get(k), bool)
               or not isinstance(self.rope_scaling.get(k), (int, float)) or not self.rope_scaling[k] > 0]
        if bad:
            found = ", ".join(f"{k}={self.rope_scaling.get(k)!r}" for k in bad)
            raise UnsupportedModelError(f"rope_scaling of type {rope_type!r} needs a positive number for each of "
                                        f"{', '.join(needs)} (it has {found})")

    @property
    def qkv_bias(self) -> bool:
        return self.model_type == "qwen2" or self.attention_bias

    @property
    def o_bias(self) -> bool:
        return self.model_type != "qwen2" and self.attention_bias

    @property
    def qk_norm(self) -> bool:
        return self.model_type == "qwen3"

    @classmethod
    def from_hf_dict(cls, d: dict) -> "ModelConfig":
        """Read a Hugging Face config.json dict (transformers 4.x or 5.x layout)."""
        mt = d.get("model_type")
        if mt not in SUPPORTED_TYPES:
            raise UnsupportedModelError(
                f"model_type {mt!r} is not supported; supported: {', '.join(SUPPORTED_TYPES)} "
                "(Llama 2/3.x, SmolLM, Qwen2/2.5, Qwen3 dense)")
        if d.get("use_sliding_window") or "sliding_attention" in (d.get("layer_types") or []):
            raise UnsupportedModelError(f"{mt} with sliding-window attention is not supported")
        if d.get("hidden_act", "silu") != "silu":
            raise UnsupportedModelError(f"hidden_act {d['hidden_act']!r} is not supported; only silu")
        rope = d.get("rope_parameters") or d.get("rope_scaling") or {}  # 5.x / 4.x layout
        if not isinstance(rope, dict):
            raise UnsupportedModelError(f"rope_scaling must be an object of rope_type and its numbers, not {rope!r}")
        rope = dict(rope)
        theta = rope.pop("rope_theta", d.get("rope_theta", 10000.0))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope.get("partial_rotary_factor", 1.0) != 1.0:
            raise UnsupportedModelError("partial rotary embeddings are not supported")
        scaling = None
        if rope_type != "default":
            scaling = {k: v for k, v in rope.items() if k != "type"} | {"rope_type": rope_type}
            if rope_type == "llama3":
                scaling.setdefault("original_max_position_embeddings", d.get("max_position_embeddings"))
        n_heads = d["num_attention_heads"]
        return cls(
            model_type=mt, vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"], num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=n_heads, num_key_value_heads=d.get("num_key_value_heads") or n_heads,
            head_dim=d.get("head_dim") or (128 if mt == "qwen3" else 0),
            rms_norm_eps=d.get("rms_norm_eps", 1e-6), rope_theta=theta, rope_scaling=scaling,
            max_position_embeddings=d.get("max_position_embeddings", 2048),
            tie_word_embeddings=d.get("tie_word_embeddings", False),
            attention_bias=d.get("attention_bias", False), mlp_bias=d.get("mlp_bias", False),
            bos_token_id=d.get("bos_token_id"), eos_token_id=d.get("eos_token_id"),
            pad_token_id=d.get("pad_token_id"), hf=d)

    def to_hf_dict(self) -> dict:
        """The config.json we write: the loaded one when there was one, else a fresh one.
        Written in the 4.x layout (rope_theta / rope_scaling), which transformers 5.x also reads."""
        if self.hf:
            return dict(self.hf)
        d = dict(architectures=[ARCHITECTURES[self.model_type]], model_type=self.model_type,
                  vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                  intermediate_size=self.intermediate_size, num_hidden_layers=self.num_hidden_layers,
                  num_attention_heads=self.num_attention_heads,
                  num_key_value_heads=self.num_key_value_heads, head_dim=self.head_dim,
                  hidden_act="silu", rms_norm_eps=self.rms_norm_eps, rope_theta=self.rope_theta,
                  rope_scaling=self.rope_scaling, max_position_embeddings=self.max_position_embeddings,
                  tie_word_embeddings=self.tie_word_embeddings, attention_bias=self.attention_bias,
                  bos_token_id=self.bos_token_id, eos_token_id=self.eos_token_id,
                  pad_token_id=self.pad_token_id)
        if self.model_type == "llama":
            d["mlp_bias"] = self.mlp_bias
        else:
            d["use_sliding_window"] = False
        return d


# -----------------------------------------------------------------------------
# Building blocks


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rope_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """Inverse frequencies (D/2,), with Llama-3 or linear context scaling applied."""
    D = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    s = cfg.rope_scaling or {}
    if s.get("rope_type") == "linear":
        inv_freq = inv_freq / s["factor"]
    elif s.get("rope_type") == "llama3":
        factor, lo, hi = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
        old_ctx = s["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_ctx / lo, inv_freq / factor, inv_freq)  # long waves: slow down
        smooth = (old_ctx / wavelen - lo) / (hi - lo)
        blended = (1 - smooth) * scaled / factor + smooth * scaled  # medium waves: interpolate
        medium = (wavelen >= old_ctx / hi) & (wavelen <= old_ctx / lo)
        inv_freq = torch.where(medium, blended, scaled)
    return inv_freq


def rope_cos_sin(inv_freq: torch.Tensor, pos: torch.Tensor, dtype: torch.dtype):
    """pos (B,T) int -> cos, sin (B,1,T,D), computed in float32 then cast."""
    freqs = pos[..., None].float() * inv_freq.float()  # (B,T,D/2)
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B,1,T,D)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class KVCache:
    """Preallocated keys/values for every layer: k, v (L, B, Hkv, T_max, D)."""

    def __init__(self, cfg: ModelConfig, batch: int, max_len: int, dtype, device):
        shape = (cfg.num_hidden_layers, batch, cfg.num_key_value_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv, self.hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        C = cfg.hidden_size
        self.q_proj = nn.Linear(C, self.n_head * self.hd, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(C, self.n_kv * self.hd, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(C, self.n_kv * self.hd, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(self.n_head * self.hd, C, bias=cfg.o_bias)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(self.hd, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.hd, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache=None, cache_pos=None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.hd)
        k = self.k_proj(x).view(B, T, self.n_kv, self.hd)
        v = self.v_proj(x).view(B, T, self.n_kv, self.hd).transpose(1, 2)  # (B,Hkv,T,D)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q.transpose(1, 2), cos, sin)  # (B,H,T,D)
        k = apply_rope(k.transpose(1, 2), cos, sin)  # (B,Hkv,T,D)
        if cache is not None:  # write this call's columns, then attend over the first S columns
            cache.k[self.layer_idx].index_copy_(2, cache_pos, k)
            cache.v[self.layer_idx].index_copy_(2, cache_pos, v)
            S = T if mask is None else mask.shape[-1]
            k, v = cache.k[self.layer_idx][:, :, :S], cache.v[self.layer_idx][:, :, :S]
        if cache is not None and T == 1:
            y = grouped_decode_attention(q, k, v, mask)
        else:  # mask None: plain causal attention, SDPA's fastest path
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                               enable_gqa=True)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.hd))


def grouped_decode_attention(q, k, v, mask):
    """One query token per row, GQA without copying keys: q (B,H,1,D), k/v (B,Hkv,S,D),
    mask (B,1,1,S) bool, or float added to the scores -> (B,H,1,D). Softmax in float32."""
    B, H, _, D = q.shape
    Hkv = k.shape[1]
    qg = q.view(B, Hkv, H // Hkv, D)  # heads h = g*(H/Hkv) + j share kv head g
    att = (qg @ k.transpose(-1, -2)).float() / math.sqrt(D)  # (B,Hkv,H/Hkv,S)
    att = att + (mask if mask.is_floating_point() else score_bias(mask)).view(B, 1, 1, -1)
    return (att.softmax(-1).to(v.dtype) @ v).view(B, H, 1, D)


def score_bias(mask: torch.Tensor) -> torch.Tensor:
    """bool mask -> float32 0 where True, -inf where False (added to attention scores)."""
    return torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, float("-inf"))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        C, I, b = cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias
        self.gate_proj = nn.Linear(C, I, bias=b)
        self.up_proj = nn.Linear(C, I, bias=b)
        self.down_proj = nn.Linear(I, C, bias=b)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, cache=None, cache_pos=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, cache_pos)
        return x + self.mlp(self.post_attention_layernorm(x))


# -----------------------------------------------------------------------------
# The model


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,T) 1 = token, 0 = pad -> (B,T) RoPE positions 0,1,2,... counted over real tokens only."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def causal_padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,T) -> (B,1,T,T) bool: query i sees key j <= i that is not padding. Every query also sees
    itself, so rows of padding never softmax over nothing (their outputs are ignored anyway)."""
    T = attention_mask.shape[1]
    idx = torch.arange(T, device=attention_mask.device)
    causal = idx[None, :] <= idx[:, None]  # (T,T)
    return (causal & attention_mask.bool()[:, None, :] | (idx[None, :] == idx[:, None]))[:, None]


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = nn.Module()  # HF naming: model.embed_tokens / model.layers / model.norm
        self.model.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.model.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_hidden_layers))
        self.model.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)
        self.grad_checkpoint = False  # --grad-checkpoint: keep only block inputs for backward

    def init_weights(self, std: float = 0.02):
        """Random init (normal(0, std) matrices, zero biases, unit norms), as for a fresh model."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)
        return self

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.model.embed_tokens.weight.numel() if non_embedding else n

    def forward(self, input_ids, attention_mask=None, positions=None, logits_mask=None,
                cache: KVCache | None = None, cache_pos=None, key_mask=None):
        """
        input_ids (B,T); attention_mask (B,T) 1 = token, 0 = pad (None: no padding).
        positions (B,T): RoPE positions (default: from attention_mask).
        logits_mask (B,T) bool: return logits only there, as (N,V) in row-major order.
        cache, cache_pos (T,): write keys/values into these cache columns and attend over the
        cache (the engine's path). A prefill (T > 1) must fill columns 0..T-1 of a fresh cache;
        a decode step (T == 1) attends to the first S cache columns where key_mask (B,S) is True.
        Returns float32 logits (B,T,V), or (N,V) with logits_mask.
        """
        B, T = input_ids.shape
        if positions is None:
            positions = (positions_from_mask(attention_mask) if attention_mask is not None
                         else torch.arange(T, device=input_ids.device).expand(B, T))
        x = self.model.embed_tokens(input_ids)
        cos, sin = rope_cos_sin(self.inv_freq, positions, x.dtype)
        if cache is not None and T == 1:
            mask = score_bias(key_mask)[:, None, None, :]  # (B,1,1,S), built once for all layers
        elif attention_mask is not None and not attention_mask.bool().all():
            mask = causal_padding_mask(attention_mask)  # (B,1,T,T)
        else:
            mask = None  # no padding: causal
        for block in self.model.layers:
            if self.grad_checkpoint and self.training and torch.is_grad_enabled():  # recompute in backward
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, mask, cache, cache_pos, use_reentrant=False)
            else:
                x = block(x, cos, sin, mask, cache, cache_pos)
        x = self.model.norm(x)
        if logits_mask is not None:
            x = x[logits_mask]  # (N,C)
        return self.lm_head(x).float()

    # -- Hugging Face directory I/O ------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str, device="cpu", dtype=torch.float32) -> "Transformer":
        """Load `config.json` + `model.safetensors` (or a sharded `*.safetensors` set)."""
        cfg_path = os.path.join(path, "config.json")
        if not os.path.isfile(cfg_path):
            raise FileNotFoundError(f"{path}: no config.json (expected a Hugging Face model directory)")
        with open(cfg_path) as f:
            cfg = ModelConfig.from_hf_dict(json.load(f))
        return cls.from_state(cfg, read_safetensors(path), device, dtype, where=path)

    @classmethod
    def from_state(cls, cfg: ModelConfig, state: dict, device="cpu", dtype=torch.float32,
                   where: str = "state") -> "Transformer":
        """A model of `cfg` holding the tensors of `state` (its state_dict's names)."""
        with torch.device("meta"):
            model = cls(cfg)
        state = dict(state)
        if cfg.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        expected = {k for k in model.state_dict() if not (cfg.tie_word_embeddings and k == "lm_head.weight")}
        missing, extra = expected - state.keys(), state.keys() - expected
        if missing or extra:
            raise ValueError(f"{where}: weights do not match the config; missing {sorted(missing)[:5]}, "
                             f"unexpected {sorted(extra)[:5]}")
        state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
        model.load_state_dict(state, strict=False, assign=True)
        if cfg.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight
        model.inv_freq = rope_inv_freq(cfg).to(device)
        return model.eval()

    def save_pretrained(self, path: str, dtype: torch.dtype | None = None):
        """Write config.json and model.safetensors so `transformers` (and we) can load them."""
        from safetensors.torch import save_file
        os.makedirs(path, exist_ok=True)
        state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in self.state_dict().items()}
        if self.config.tie_word_embeddings:
            state.pop("lm_head.weight")
        cfg = self.config.to_hf_dict()
        cfg["torch_dtype"] = str(next(iter(state.values())).dtype).removeprefix("torch.")
        atomic_write(os.path.join(path, "model.safetensors"),
                     lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
        atomic_write(os.path.join(path, "config.json"), lambda tmp: write_json(cfg, tmp))


def read_safetensors(path: str) -> dict:
    from safetensors.torch import load_file
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors weights (only safetensors is supported)")
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):  # sharded: read exactly the files the index names
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    state = {}
    for f in files:
        state.update(load_file(os.path.join(path, f)))
    return state


def write_json(obj, path: str):
    """obj as indented JSON into the file `path` (the argument order of comt.common.write_json)."""
    with open(path, "w") as f:
        f.write(json.dumps(obj, indent=2) + "\n")


def atomic_write(dst: str, write):
    """Call write(tmp_path), then rename over dst, so a crash never leaves a half-written file."""
    tmp = dst + ".tmp"
    write(tmp)
    os.replace(tmp, dst)
