"""A lean forward pass of a Qwen3 decoder stack for rerankers, over the model's own modules and weights.

Why not `Qwen3Model.forward`: a reranker needs one hidden state per row (the last position), and on
CPU about a third of the generic forward is memory-bound glue around the matrix products (profiled
on the 0.6B architecture, fp32, 2 threads: RMSNorm as five separate ops, rotary embeddings through
`cat`/`neg`, a KV cache that copies the job's shared prefix for every micro-batch, mask building).
This pass computes the same function with fused RMSNorm, rotary embeddings applied in place, one
SiLU-gate product in place, a boolean mask built once per pass, and the last layer evaluated only
at the last position (its keys and values still cover every position). The numbers match the
generic forward within float rounding (tests compare both with the official recipe in fp32).

Only plain Qwen3 stacks qualify (full attention in every layer, no biases assumed or excluded:
the projection modules are called as they are); anything else keeps the generic forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [1, kv_heads, prefix, head_dim]


def supports(base) -> bool:
    """True for a Qwen3 decoder stack this pass computes exactly (no sliding-window layers)."""
    config = getattr(base, "config", None)
    if type(base).__name__ != "Qwen3Model" or config is None:
        return False
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    return all(t == "full_attention" for t in layer_types) and not getattr(config, "use_sliding_window", False)


def _rms(norm, x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin without materialising rotate_half. x: [b, heads, L, d]; cos, sin: [b, 1, L, d]."""
    half = x.shape[-1] // 2
    out = x * cos
    out[..., :half].addcmul_(x[..., half:], sin[..., :half], value=-1)
    out[..., half:].addcmul_(x[..., :half], sin[..., half:])
    return out


class Qwen3Stack:
    """Last-position hidden states of left-padded rows, optionally after a shared prefix's cached keys/values."""

    def __init__(self, base):
        self.base = base
        self.layers = list(base.layers)
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.scaling = attn.scaling

    def prefix_kv(self, prefix_ids: torch.Tensor) -> KV:
        """Keys and values of one prefix row [1, p] in every layer (rotary applied, as attention reads them)."""
        p = prefix_ids.shape[1]
        pos = torch.arange(p, device=prefix_ids.device).unsqueeze(0)
        allowed = torch.ones(p, p, dtype=torch.bool, device=prefix_ids.device).tril()
        kv: KV = []
        self._run(prefix_ids, pos, allowed[None, None], None, kv_out=kv)
        return kv

    def last_hidden(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, prefix: KV | None = None
    ) -> torch.Tensor:
        """ids, mask, positions: [b, L] left-padded rows (positions already offset by the prefix length).
        Returns the final-norm hidden state of each row's last position, [b, hidden]."""
        b, n = ids.shape
        p = 0 if prefix is None else prefix[0][0].shape[2]
        dev = ids.device
        key_ok = mask.bool()
        causal = torch.ones(n, n, dtype=torch.bool, device=dev).tril()
        own = causal[None] & key_ok[:, None, :]  # [b, L, L]: causal, real keys only
        own |= torch.eye(n, dtype=torch.bool, device=dev)  # padded queries see themselves: no all-masked rows
        if p:
            own = torch.cat([torch.ones(b, n, p, dtype=torch.bool, device=dev), own], dim=2)
        return self._run(ids, positions, own[:, None], prefix)

    def _run(self, ids, positions, allowed, prefix: KV | None, kv_out: KV | None = None) -> torch.Tensor:
        base = self.base
        x = base.embed_tokens(ids)
        cos, sin = base.rotary_emb(x, positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        b, n, _ = x.shape
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = _rms(layer.input_layernorm, x)
            k = _rms(attn.k_norm, attn.k_proj(h).view(b, n, -1, self.head_dim)).transpose(1, 2)
            v = attn.v_proj(h).view(b, n, -1, self.head_dim).transpose(1, 2)
            k = _rotate(k, cos, sin)
            if kv_out is not None:
                kv_out.append((k, v))
            if prefix is not None:
                pk, pv = prefix[i]
                k = torch.cat([pk.expand(b, -1, -1, -1), k], dim=2)
                v = torch.cat([pv.expand(b, -1, -1, -1), v], dim=2)
            rows = slice(n - 1, n) if i == last else slice(0, n)  # last layer: queries of the last position only
            hq = attn.q_proj(h[:, rows])
            q = _rms(attn.q_norm, hq.view(b, hq.shape[1], -1, self.head_dim)).transpose(1, 2)
            q = _rotate(q, cos[:, :, rows], sin[:, :, rows])
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=allowed[:, :, rows], scale=self.scaling, enable_gqa=q.shape[1] != k.shape[1]
            )
            x = x[:, rows] + attn.o_proj(out.transpose(1, 2).reshape(b, q.shape[2], -1))
            mlp = layer.mlp
            h = _rms(layer.post_attention_layernorm, x)
            x = x + mlp.down_proj(mlp.act_fn(mlp.gate_proj(h)).mul_(mlp.up_proj(h)))
        return _rms(base.norm, x[:, -1])
