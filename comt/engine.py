"""
Batched sampling with a preallocated KV cache, returning tokens and their log-probabilities.

Algorithm (one `Engine.generate` call):
  1. Left-pad the B prompts to the longest, P tokens; each row's RoPE positions count its own
     tokens only, so padding changes nothing.
  2. Prefill: one forward pass over (B,P) writes keys/values into a (B,P) cache and gives the
     logits of each prompt's next token. Each prompt is prefilled exactly once.
  3. Replicate: each cache row is copied G = num_samples times into a static (B*G, T_max) cache
     (rows i*G .. i*G+G-1 belong to prompt i), and the first token of every row is sampled.
  4. Decode: one token per row per step, written at cache column P+t; attention covers the whole
     cache under a key mask of valid columns. A row that samples one of its stop tokens keeps
     that token (mask True) and emits nothing after it; the loop ends when every row has stopped
     or after max_new_tokens tokens. Eagerly (no CUDA graph) the rows that have stopped are
     dropped from the batch once a quarter of it has, so a step computes only live rows; each
     step still draws one uniform per original row, so the samples are those of the full batch.
  Every buffer has a fixed shape and is updated in place, so on CUDA the decode step (forward,
  sampling, bookkeeping) is captured once as a CUDA graph and replayed; on CPU it runs eagerly and
  attends over the filled cache columns only. The graph and its buffers are kept for the next call
  with the same shapes; it reads the weights where they live, so update them in place (optimizer
  steps and `load_state_dict` do), never by assigning new tensors.

The eager decode step (the default wherever no CUDA graph runs) is `FusedDecoder`: the same
math as `Transformer.forward`, laid out for a few dozen rows on a CPU. Activations are kept
feature-major, (C,N), so every projection is W @ x with the weight as the large left operand (at
32 rows BLAS ran these 1.3-1.9x faster than x @ W^T on a 2-core CPU); q/k/v and gate/up are one
product each; the 1/sqrt(D) attention scale is folded into the query weights; RoPE reads a
cos/sin table. It copies the weights it fuses at the start of every `generate`, so it always
decodes the current model. `Engine(model, fused=False)` decodes with `Transformer.forward`
instead: the reference the tests compare the fused step against (same tokens, log-probs to
float32 rounding).

Sampling: greedy (argmax) or softmax(logits / temperature), optionally truncated to the top-p
nucleus, drawn by inverse CDF (one uniform per row) from the engine's own seeded generator, so a
seed reproduces a run. The log-prob returned for each token is log softmax(logits / temperature)
-- what a training forward at the same temperature computes. With top_p < 1 the nucleus
truncation is not in it (the usual, documented bias); greedy reports log softmax(logits).
`banned_tokens` get logit -inf before all of this: never drawn, and the log-probs are those of the
distribution renormalised over the other tokens.

CLI:
    python -m comt.engine --model DIR --prompt "What is 3 + 4?" [--greedy] [--max-new-tokens 64]
"""
import argparse
import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from comt.model import KVCache, Transformer, rope_cos_sin, score_bias


@dataclass
class Samples:
    tokens: torch.Tensor  # (N,T) long: completion tokens, pad after a row ends
    mask: torch.Tensor  # (N,T) bool: generated tokens, the stop token included
    logprobs: torch.Tensor  # (N,T) float32: log p(token) at the sampling temperature, 0 off-mask
    stopped: torch.Tensor  # (N,) bool: the row ended on a stop token, at index lengths-1
    prompt_index: torch.Tensor  # (N,) long: row r continues prompts[prompt_index[r]]

    @property
    def lengths(self) -> torch.Tensor:  # (N,)
        return self.mask.sum(1)

    def completion(self, r: int) -> tuple[list[int], list[float]]:
        """Row r's generated token ids (the stop token included) and their log-probs."""
        return self.tokens[r][self.mask[r]].tolist(), self.logprobs[r][self.mask[r]].tolist()


@dataclass
class DecodeState:
    """Every tensor one decode step reads or writes; shapes fixed for a CUDA graph."""
    cache: KVCache  # (L,N,Hkv,T_max,D)
    key_mask: torch.Tensor  # (N,T_max) bool: cache columns a query may attend to
    tok: torch.Tensor  # (N,) the last sampled token, input of the next step
    pos: torch.Tensor  # (N,) its RoPE position
    col: torch.Tensor  # (1,) its cache column
    step: torch.Tensor  # (1,) its index in the outputs
    done: torch.Tensor  # (N,) bool: the row has emitted a stop token
    stops: torch.Tensor  # (N,S) stop token ids per row, -1 padded
    banned: torch.Tensor  # (V,) bool: tokens never sampled
    out_tok: torch.Tensor  # (N,M)
    out_logp: torch.Tensor  # (N,M)
    out_mask: torch.Tensor  # (N,M)
    rows: torch.Tensor  # (n,) the output row of each batch row: arange(N) until stopped rows are dropped

    def without_stopped(self) -> "DecodeState":
        """The live rows only (new tensors; outputs and counters shared with self)."""
        keep = (~self.done).nonzero()[:, 0]
        cache = KVCache.__new__(KVCache)
        cache.k, cache.v = self.cache.k.index_select(1, keep), self.cache.v.index_select(1, keep)
        return replace(self, cache=cache, key_mask=self.key_mask[keep], tok=self.tok[keep], pos=self.pos[keep],
                       done=self.done[keep], stops=self.stops[keep], rows=self.rows[keep])


def sample_next(logits, greedy: bool, temperature: float, top_p: float, u):
    """logits (N,V) float32, u (N,1) uniforms in [0,1) (unused when greedy) -> token (N,), its
    log-prob under softmax(logits/temperature) (N,)."""
    if greedy:
        tok = logits.argmax(-1)
        return tok, logits.log_softmax(-1).gather(-1, tok[:, None])[:, 0]
    logp = (logits / temperature).log_softmax(-1)
    probs = logp.exp()
    if top_p < 1.0:  # keep the smallest set of most likely tokens whose mass reaches top_p
        p_sorted, idx = probs.sort(-1, descending=True)
        outside = p_sorted.cumsum(-1) - p_sorted >= top_p
        probs = torch.zeros_like(probs).scatter_(-1, idx, p_sorted.masked_fill(outside, 0.0))
    cdf = probs.cumsum(-1)  # inverse-CDF draw: one uniform per row
    tok = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)[:, 0].clamp_(max=cdf.shape[1] - 1)
    return tok, logp.gather(-1, tok[:, None])[:, 0]


class FusedDecoder:
    """One decode step (one token per row) with feature-major activations x (C,N); see the header.
    Built from the model's current weights for positions < max_pos."""

    def __init__(self, model: Transformer, max_pos: int):
        cfg = model.config
        self.H, self.Hkv, self.D, self.I = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim,
                                            cfg.intermediate_size)
        self.eps, self.model = cfg.rms_norm_eps, model
        scale = 1 / math.sqrt(self.D)
        cat = lambda *ts: None if ts[0] is None else torch.cat(ts).detach()
        self.layers = []
        for block in model.model.layers:
            a, m = block.self_attn, block.mlp
            qk_norm = hasattr(a, "q_norm")  # qwen3: the scale goes into the query norm, after it
            q_scale = 1.0 if qk_norm else scale
            qb = None if a.q_proj.bias is None else a.q_proj.bias * q_scale
            self.layers.append(dict(
                ln1=block.input_layernorm.weight[:, None], ln2=block.post_attention_layernorm.weight[:, None],
                qkv=cat(a.q_proj.weight * q_scale, a.k_proj.weight, a.v_proj.weight),  # ((H+2Hkv)D, C)
                qkv_b=cat(qb, a.k_proj.bias, a.v_proj.bias), o=a.o_proj.weight, o_b=a.o_proj.bias,
                q_norm=a.q_norm.weight[:, None] * scale if qk_norm else None,
                k_norm=a.k_norm.weight[:, None] if qk_norm else None,
                gate_up=cat(m.gate_proj.weight, m.up_proj.weight), gate_up_b=cat(m.gate_proj.bias, m.up_proj.bias),
                down=m.down_proj.weight, down_b=m.down_proj.bias))
        cos, sin = rope_cos_sin(model.inv_freq, torch.arange(max_pos, device=model.inv_freq.device)[None],
                                model.model.embed_tokens.weight.dtype)  # (1,1,T,D)
        half = torch.ones(self.D, dtype=sin.dtype, device=sin.device)
        half[:self.D // 2] = -1  # rotate_half(x) = roll(x, D/2) * (-1,..,-1, 1,..,1)
        self.cos, self.sin = cos[0, 0].t().contiguous(), (sin[0, 0] * half).t().contiguous()  # (D,T)

    def norm(self, x, w):
        """RMSNorm of every column of x (C,N) (or (heads,D,N) over D), in float32 as RMSNorm does."""
        h = x.float()
        return w * (h * torch.rsqrt(h.pow(2).mean(-2, keepdim=True) + self.eps)).to(x.dtype)

    def __call__(self, s: "DecodeState", width: int) -> torch.Tensor:
        """Feed s.tok at cache column s.col, attend over the first `width` columns -> logits (N,V)."""
        H, Hkv, D, I = self.H, self.Hkv, self.D, self.I
        N = s.tok.shape[0]
        x = self.model.model.embed_tokens.weight[s.tok].t().contiguous()  # (C,N)
        cos, sin = self.cos[:, s.pos], self.sin[:, s.pos]  # (D,N)
        bias = score_bias(s.key_mask[:, :width])[:, None]  # (N,1,S): 0 or -inf
        for i, w in enumerate(self.layers):
            h = self.norm(x, w["ln1"])
            qkv = w["qkv"] @ h if w["qkv_b"] is None else torch.addmm(w["qkv_b"][:, None], w["qkv"], h)
            qk = qkv[:(H + Hkv) * D].view(H + Hkv, D, N)
            if w["q_norm"] is not None:
                qk = torch.cat((self.norm(qk[:H], w["q_norm"]), self.norm(qk[H:], w["k_norm"])))
            qk = torch.addcmul(qk * cos, qk.roll(D // 2, 1), sin)  # RoPE
            k_cache, v_cache = s.cache.k[i], s.cache.v[i]  # (N,Hkv,T_max,D)
            k_cache.index_copy_(2, s.col, qk[H:].permute(2, 0, 1)[:, :, None])
            v_cache.index_copy_(2, s.col, qkv[(H + Hkv) * D:].view(Hkv, D, N).permute(2, 0, 1)[:, :, None])
            q = qk[:H].permute(2, 0, 1).reshape(N * Hkv, H // Hkv, D)  # heads g*H/Hkv+j share kv head g
            k = k_cache[:, :, :width].reshape(N * Hkv, width, D)
            att = torch.bmm(q, k.transpose(1, 2)).float().view(N, H, width)
            p = (att + bias).softmax(-1).to(x.dtype).view(N * Hkv, H // Hkv, width)
            y = torch.bmm(p, v_cache[:, :, :width].reshape(N * Hkv, width, D)).view(N, H * D)
            x = torch.addmm(x, w["o"], y.t())
            if w["o_b"] is not None:
                x = x + w["o_b"][:, None]
            gu = self.norm(x, w["ln2"])
            gu = w["gate_up"] @ gu if w["gate_up_b"] is None else torch.addmm(w["gate_up_b"][:, None], w["gate_up"], gu)
            x = torch.addmm(x, w["down"], F.silu(gu[:I]) * gu[I:])
            if w["down_b"] is not None:
                x = x + w["down_b"][:, None]
        x = self.norm(x, self.model.model.norm.weight[:, None])
        return (self.model.lm_head.weight @ x).t().float()  # (N,V)


class Engine:
    def __init__(self, model: Transformer, pad_id: int = 0, cuda_graph: bool | None = None,
                 fused: bool | None = None, drop_stopped: bool = True):
        """cuda_graph: capture the decode step (default: on CUDA). fused: decode with FusedDecoder
        (default: wherever no graph is captured); False decodes with Transformer.forward.
        drop_stopped: decode only the rows that have not stopped (eager decoding)."""
        self.model = model
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.pad_id = pad_id
        self.cuda_graph = self.device.type == "cuda" if cuda_graph is None else cuda_graph
        self.fused = not self.cuda_graph if fused is None else fused
        self.drop_stopped = drop_stopped and not self.cuda_graph
        self.gen = torch.Generator(self.device)
        self._state, self._key, self._graph, self._decoder = None, None, None, None

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], num_samples: int = 1, max_new_tokens: int = 256,
                 temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False,
                 stop_tokens=(), seed: int | None = None, banned_tokens=()) -> Samples:
        """
        prompts: B lists of token ids. Returns B*num_samples rows, prompt-major.
        stop_tokens: ids that end every row, or one list (or tuple) of ids per prompt.
        seed: reproduces the samples (None: a fresh random seed).
        banned_tokens: ids that are never sampled.
        """
        self._check(prompts, num_samples, max_new_tokens, temperature, top_p)
        greedy = greedy or temperature == 0.0
        sampling = (greedy, float(temperature), float(top_p))
        if seed is None:
            self.gen.seed()
        else:
            self.gen.manual_seed(seed)
        B, G, M = len(prompts), num_samples, max_new_tokens
        N = B * G
        ids, mask = self._left_pad(prompts)  # (B,P)
        P = ids.shape[1]
        stops = self._stop_table(stop_tokens, B).repeat_interleave(G, 0)  # (N,S)

        # prefill once per prompt, then replicate for the group
        cache = KVCache(self.model.config, B, P, self.dtype, self.device)
        last = torch.zeros_like(mask, dtype=torch.bool)
        last[:, -1] = True
        logits = self.model(ids, mask, cache=cache, cache_pos=torch.arange(P, device=self.device),
                            key_mask=mask.bool(), logits_mask=last)  # (B,V)

        T_max = -(-(P + M) // 64) * 64  # rounded up so graphs are reused across prompt lengths
        self._decoder = FusedDecoder(self.model, P + M) if self.fused else None  # today's weights
        s = self._state_for((N, T_max, M, stops.shape[1], sampling), sampling)
        self._reset(s, cache, mask, G, stops, banned_tokens)
        self._emit(s, logits.repeat_interleave(G, 0), sampling)
        if self._graph:
            for i in range(1, M):
                if i % 8 == 0 and bool(s.done.all()):
                    break
                self._graph.replay()
        else:
            self._decode_eagerly(s, sampling, P, M)
        self._decoder = None  # its weight copies go stale at the next update

        used = max(int(s.out_mask.sum(1).max()), 1)
        return Samples(tokens=s.out_tok[:, :used].clone(), mask=s.out_mask[:, :used].clone(),
                       logprobs=s.out_logp[:, :used].clone(), stopped=s.done.clone(),
                       prompt_index=torch.arange(B, device=self.device).repeat_interleave(G))

    def _decode_eagerly(self, s: DecodeState, sampling, P: int, M: int):
        """Steps 1..M-1 over the filled cache columns; once a quarter of the rows have stopped,
        continue with the live rows only."""
        live = s
        for i in range(1, M):
            n_live = int((~live.done).sum())
            if n_live == 0:
                break
            if self.drop_stopped and n_live <= 3 * len(live.rows) // 4:
                live = live.without_stopped()
            self._step(live, sampling, width=P + i)
            if live is not s:  # s.done stays the record of every row
                s.done.index_copy_(0, live.rows, live.done)

    # -- one decode step -------------------------------------------------------------------

    def _step(self, s: DecodeState, sampling, width: int | None = None):
        """Feed each row's last token at column s.col; attend over the first `width` columns
        (eager: just the filled ones; a CUDA graph: all T_max, fixed shapes)."""
        s.key_mask.index_fill_(1, s.col, True)
        if self._decoder is not None:
            logits = self._decoder(s, width or s.key_mask.shape[1])
        else:
            logits = self.model(s.tok[:, None], positions=s.pos[:, None], cache=s.cache,
                                cache_pos=s.col, key_mask=s.key_mask[:, :width])[:, 0]  # (N,V)
        s.pos.add_(1)
        s.col.add_(1)
        self._emit(s, logits, sampling)

    def _emit(self, s: DecodeState, logits, sampling):
        """Sample one token per row and record it; rows already stopped record padding."""
        every_row = s.rows.shape[0] == s.out_tok.shape[0]  # always so under a CUDA graph
        u = None if sampling[0] else torch.rand(s.out_tok.shape[0], 1, generator=self.gen, device=self.device)
        if u is not None and not every_row:
            u = u[s.rows]  # one draw per output row, whichever rows are still decoded
        tok, logp = sample_next(logits.masked_fill(s.banned, float("-inf")), *sampling, u)
        live = ~s.done
        for out, value in ((s.out_tok, torch.where(live, tok, self.pad_id)),
                           (s.out_logp, torch.where(live, logp, 0.0)), (s.out_mask, live)):
            if every_row:  # column s.step of every row
                out.index_copy_(1, s.step, value[:, None])
            else:
                out.index_put_((s.rows, s.step), value)
        s.done.logical_or_((tok[:, None] == s.stops).any(-1))
        s.tok.copy_(tok)
        s.step.add_(1)

    # -- static state and the CUDA graph ---------------------------------------------------

    def _state_for(self, key, sampling) -> DecodeState:
        """Reuse the buffers (and graph) of the previous call when shapes and sampling match."""
        if key == self._key:
            return self._state
        self._state, self._graph = None, None  # free the old buffers first
        N, T_max, M, S, _ = key
        cfg, dev = self.model.config, self.device
        s = DecodeState(
            cache=KVCache(cfg, N, T_max, self.dtype, dev),
            key_mask=torch.zeros(N, T_max, dtype=torch.bool, device=dev),
            tok=torch.zeros(N, dtype=torch.long, device=dev),
            pos=torch.zeros(N, dtype=torch.long, device=dev),
            col=torch.zeros(1, dtype=torch.long, device=dev),
            step=torch.zeros(1, dtype=torch.long, device=dev),
            done=torch.zeros(N, dtype=torch.bool, device=dev),
            stops=torch.full((N, S), -1, dtype=torch.long, device=dev),
            banned=torch.zeros(cfg.vocab_size, dtype=torch.bool, device=dev),
            out_tok=torch.zeros(N, M, dtype=torch.long, device=dev),
            out_logp=torch.zeros(N, M, dtype=torch.float32, device=dev),
            out_mask=torch.zeros(N, M, dtype=torch.bool, device=dev),
            rows=torch.arange(N, device=dev))
        if self.cuda_graph:
            self._graph = self._capture(s, sampling)
        self._state, self._key = s, key
        return s

    def _capture(self, s: DecodeState, sampling) -> torch.cuda.CUDAGraph:
        """Warm up on a side stream (on dummy state, reset before use), then capture one step."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._step(s, sampling)
                s.step.zero_()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(self.gen)
        with torch.cuda.graph(graph):
            self._step(s, sampling)
        return graph

    def _reset(self, s: DecodeState, cache: KVCache, mask, G: int, stops, banned_tokens=()):
        """Load a prefilled (B,P) cache and prompt mask into the static (B*G, T_max) state."""
        P = mask.shape[1]
        s.cache.k[:, :, :, :P].copy_(cache.k.repeat_interleave(G, 1))
        s.cache.v[:, :, :, :P].copy_(cache.v.repeat_interleave(G, 1))
        s.key_mask.zero_()
        s.key_mask[:, :P] = mask.bool().repeat_interleave(G, 0)
        s.pos.copy_(mask.sum(1).repeat_interleave(G))  # the first sampled token's position
        s.col.fill_(P)
        s.step.zero_()
        s.done.zero_()
        s.stops.copy_(stops)
        s.banned.zero_()
        s.banned[torch.tensor(list(banned_tokens), dtype=torch.long, device=self.device)] = True
        s.out_tok.fill_(self.pad_id)
        s.out_logp.zero_()
        s.out_mask.zero_()

    # -- input handling --------------------------------------------------------------------

    def _check(self, prompts, num_samples, max_new_tokens, temperature, top_p):
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        V = self.model.config.vocab_size
        if any(not 0 <= t < V for p in prompts for t in p):
            raise ValueError(f"prompt token ids must lie in [0, {V})")
        if num_samples < 1 or max_new_tokens < 1:
            raise ValueError("num_samples and max_new_tokens must be >= 1")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")
        longest = max(map(len, prompts)) + max_new_tokens
        if longest > self.model.config.max_position_embeddings:
            raise ValueError(f"prompt + max_new_tokens = {longest} tokens exceeds the model's "
                             f"context of {self.model.config.max_position_embeddings}")

    def _left_pad(self, prompts):
        P = max(map(len, prompts))
        ids = torch.full((len(prompts), P), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(prompts), P, dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, P - len(p):] = torch.tensor(p)
            mask[i, P - len(p):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _stop_table(self, stop_tokens, B: int) -> torch.Tensor:
        """One set for all rows, or one set per prompt -> (B,S) ids, -1 padded (S >= 1)."""
        per_prompt = len(stop_tokens) > 0 and isinstance(stop_tokens[0], (list, tuple))
        if per_prompt and len(stop_tokens) != B:
            raise ValueError(f"got {len(stop_tokens)} stop-token lists for {B} prompts")
        sets = [[int(t) for t in s] for s in stop_tokens] if per_prompt else [[int(t) for t in stop_tokens]] * B
        S = max(1, max(map(len, sets)))
        table = torch.full((B, S), -1, dtype=torch.long)
        for i, s in enumerate(sets):
            table[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        return table.to(self.device)


# -----------------------------------------------------------------------------
# CLI


def stop_ids(tok, model) -> list[int]:
    """The tokenizer's EOS plus every EOS the model config names (chat models often list several)."""
    eos = model.config.eos_token_id
    return sorted({tok.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None})


def complete(engine: Engine, tok, prompts: list[list[int]], max_new_tokens: int, batch: int = 64,
             progress: bool = False, **sampling) -> list[str]:
    """Decoded continuations (stop token dropped) of token-id prompts, `batch` prompts per call;
    greedy unless sampling arguments are given."""
    from tqdm import tqdm
    sampling = {"greedy": True, **sampling}
    stops = stop_ids(tok, engine.model)
    out = []
    for i in tqdm(range(0, len(prompts), batch), desc="generate", disable=not progress, leave=False):
        s = engine.generate(prompts[i:i + batch], max_new_tokens=max_new_tokens, stop_tokens=stops, **sampling)
        out += [tok.decode(s.completion(r)[0], skip_special_tokens=True) for r in range(len(s.tokens))]
    return out


def main():
    from comt.common import check_checkpoint, load_model, pad_id, pick_device, pick_dtype
    from comt.flags import COUNT, NONNEG, SEED, number

    ap = argparse.ArgumentParser(prog="python -m comt.engine",
                                 description="Sample a completion from a Hugging Face model directory.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", required=True, help="model directory (config.json, *.safetensors, tokenizer)")
    ap.add_argument("--prompt", required=True, help="the prompt text")
    ap.add_argument("--no-chat", action="store_true", help="do not apply the tokenizer's chat template")
    # sampling
    ap.add_argument("--greedy", action="store_true", help="argmax decoding")
    ap.add_argument("--temperature", type=NONNEG, default=1.0, help="softmax temperature (0: greedy)")
    ap.add_argument("--top-p", type=number(above=0, hi=1), default=1.0, help="nucleus sampling mass (1: off)")
    ap.add_argument("--num-samples", type=COUNT, default=1, help="completions to draw")
    ap.add_argument("--max-new-tokens", type=COUNT, default=128, help="tokens to generate at most")
    ap.add_argument("--seed", type=SEED, default=0, help="sampling seed")
    # runtime
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    ap.add_argument("--dtype", default="auto", help="auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16")
    args = ap.parse_args()
    if not args.prompt.strip():
        ap.error("--prompt is empty: give the text to continue")

    device = pick_device(args.device)
    tok = check_checkpoint(args.model, "--model")
    model = load_model(args.model, device=device, dtype=pick_dtype(args.dtype, device))
    if tok.chat_template and not args.no_chat:
        ids = tok.apply_chat_template([{"role": "user", "content": args.prompt}],
                                      add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    else:
        ids = tok(args.prompt)["input_ids"]
    context = model.config.max_position_embeddings
    if len(ids) + args.max_new_tokens > context:
        raise SystemExit(f"--prompt of {len(ids)} tokens + --max-new-tokens {args.max_new_tokens} is longer than the "
                         f"{context} tokens the model reads")
    engine = Engine(model, pad_id=pad_id(tok))
    out = engine.generate([list(ids)], num_samples=args.num_samples, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, top_p=args.top_p, greedy=args.greedy,
                          stop_tokens=stop_ids(tok, model), seed=args.seed)
    for r in range(out.tokens.shape[0]):
        text = tok.decode(out.completion(r)[0], skip_special_tokens=True)
        print(text if out.tokens.shape[0] == 1 else f"--- sample {r}\n{text}")


if __name__ == "__main__":
    main()
