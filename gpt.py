"""A Llama-style class-conditional autoregressive generator over image tokens, with a KV cache and
classifier-free guidance.

Papers
- IBQ: Shi et al., arXiv 2412.02692, sec. 4: a decoder-only transformer in the Llama style predicts
  the tokenizer's tokens in raster order after a class token; classifier-free guidance at sampling.
- LlamaGen: Sun et al., "Autoregressive Model Beats Diffusion: Llama for Scalable Image Generation",
  arXiv 2406.06525, sec. 2.2: the Llama blocks (Touvron et al. 2023: RMSNorm before attention and MLP,
  a SwiGLU MLP, rotary positions), the class embedding as the first token, label dropout of 0.1 so
  that the null class learns the unconditional distribution, and CFG: logits = uncond + s (cond -
  uncond) (Ho & Salimans 2022).

What the public SEED-Voken model (src/IBQ/modules/transformer/llama.py) has and ours does not: AdaLN
class modulation in every block and before the head, 2-D rotary positions (ours are 1-D, over the
raster order), a zero-initialised head; it can also initialise the token embeddings from the
tokenizer's codebook through a learned MLP (`use_pretrained_codebook`, off in every config). Our
`init_from_codebook` is a simpler fixed map, and whether to use it is the caller's choice. Dropout
(the public model's 0.1) is `dropout`, on the attention weights and on each residual branch.

`python gpt.py` trains a small model on a toy class-conditional sequence task in seconds and checks
that its samples follow each class's rule.
"""
import argparse
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from arrays import check_number


def rotate(x, cos, sin):
    """Rotary positions (Su et al. 2021), the half-split form: x (B, nh, T, hd), cos/sin (T, hd/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, n_embd, n_head, dropout):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.proj = nn.Linear(n_embd, n_embd, bias=False)

    def forward(self, x, cos, sin, kv=None):
        """kv: the cached (keys, values) of the earlier positions, or None. Returns (y, (keys, values))."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)  # 3 x (B, nh, T, hd)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if kv is not None:
            k, v = torch.cat([kv[0], k], 2), torch.cat([kv[1], v], 2)  # (B, nh, L + T, hd)
        # SDPA's causal mask is aligned top-left, right only for a prefix from position 0 (T > 1,
        # no cache) or a single new query that may see everything cached (T == 1).
        if kv is not None and T != 1:
            raise ValueError("tokens: with a KV cache, feed one token at a time")
        y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C)), (k, v)


class Block(nn.Module):
    def __init__(self, n_embd, n_head, dropout):
        super().__init__()
        hidden = 4 * ((int(8 * n_embd / 3) + 3) // 4)  # SwiGLU: 2/3 of 4x width keeps the parameter count
        self.norm1, self.attn = nn.RMSNorm(n_embd, eps=1e-6), Attention(n_embd, n_head, dropout)
        self.norm2 = nn.RMSNorm(n_embd, eps=1e-6)
        self.gate = nn.Linear(n_embd, hidden, bias=False)
        self.up = nn.Linear(n_embd, hidden, bias=False)
        self.down = nn.Linear(hidden, n_embd, bias=False)
        self.drop = nn.Dropout(dropout)  # on each branch before it joins the residual stream, as LlamaGen

    def forward(self, x, cos, sin, kv=None):
        a, kv = self.attn(self.norm1(x), cos, sin, kv)
        x = x + self.drop(a)
        h = self.norm2(x)
        return x + self.drop(self.down(F.silu(self.gate(h)) * self.up(h))), kv


class GPT(nn.Module):
    """Sequence [class] t_1 ... t_n (n = block_size tokens); the logits at position i predict t_{i+1}.
    Class n_classes is the null class of classifier-free guidance (labels dropped in training)."""

    def __init__(self, vocab_size, n_classes, block_size, n_layer, n_head, n_embd, dropout=0.0):
        super().__init__()
        if n_embd % (2 * n_head):
            raise ValueError(f"n_embd: {n_embd} must be a multiple of 2 * n_head = {2 * n_head} (rotary halves)")
        self.n_classes, self.block_size = n_classes, block_size
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.cls_emb = nn.Embedding(n_classes + 1, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout) for _ in range(n_layer))
        self.norm = nn.RMSNorm(n_embd, eps=1e-6)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        hd = n_embd // n_head
        freq = 1.0 / 10000 ** (torch.arange(0, hd, 2).float() / hd)  # (hd/2,)
        angle = torch.arange(block_size + 1).float()[:, None] * freq  # (T, hd/2)
        self.register_buffer("cos", angle.cos(), persistent=False)
        self.register_buffer("sin", angle.sin(), persistent=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:  # GPT-2's init, residual projections scaled by 1/sqrt(2 n_layer)
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("proj.weight", "down.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def init_from_codebook(self, codebook):
        """Token embeddings start as the codes (K, d) under a random orthogonal map to n_embd,
        scaled to the usual 0.02 std: tokens close in the tokenizer start close in the transformer."""
        d, n = codebook.shape[1], self.tok_emb.weight.shape[1]
        q, _ = torch.linalg.qr(torch.randn(max(d, n), min(d, n)))
        proj = q if d >= n else q.T  # (d, n), orthonormal rows or columns
        e = (codebook.detach().float().cpu() - codebook.detach().float().cpu().mean(0)) @ proj
        with torch.no_grad():
            self.tok_emb.weight.copy_(e * (0.02 / e.std().clamp_min(1e-8)))

    def forward(self, labels, tokens, cache=None):
        """labels (B,), tokens (B, T) -> logits (B, T', V). Without `cache` (training) T' = T + 1.
        With `cache` (a list, filled here): the first call (empty list) holds the prefix, later calls
        one new token each; the labels are read on the first call only."""
        start = cache[0][0].shape[2] if cache else 0
        x = self.tok_emb(tokens)  # (B, T, C)
        if start == 0:
            x = torch.cat([self.cls_emb(labels)[:, None], x], 1)  # (B, 1 + T, C)
        T = x.shape[1]
        cos, sin = self.cos[start:start + T], self.sin[start:start + T]
        for i, block in enumerate(self.blocks):
            x, kv = block(x, cos, sin, cache[i] if start else None)
            if cache is not None:
                cache[i:i + 1] = [kv]
        return self.head(self.norm(x))


def filter_logits(logits, top_k=0, top_p=1.0):
    """Keep the top_k largest logits and the smallest set holding top_p of the mass; -inf elsewhere."""
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        mass_before = sorted_logits.softmax(-1).cumsum(-1) - sorted_logits.softmax(-1)
        drop = torch.zeros_like(logits, dtype=torch.bool).scatter(1, order, mass_before >= top_p)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def generate(model, labels, *, temperature=1.0, top_k=0, top_p=1.0, cfg_scale=1.0, use_cache=True,
             generator=None):
    """Sample model.block_size tokens for each label (B,) -> (B, block_size). With cfg_scale != 1 the
    batch also runs with the null class and logits = uncond + cfg_scale * (cond - uncond)."""
    check_number(temperature, "temperature", low=0, low_open=True)
    check_number(top_k, "top_k", low=0, integer=True)
    check_number(top_p, "top_p", low=0, high=1, low_open=True)
    check_number(cfg_scale, "cfg_scale")
    guided = cfg_scale != 1.0
    lab = torch.cat([labels, torch.full_like(labels, model.n_classes)]) if guided else labels
    tokens = labels.new_zeros(len(labels), 0)
    cache = [] if use_cache else None
    for i in range(model.block_size):
        inp = tokens[:, -1:] if use_cache and i > 0 else tokens
        logits = model(lab, torch.cat([inp, inp]) if guided else inp, cache)[:, -1].float()  # (B', V)
        if guided:
            cond, uncond = logits.chunk(2)
            logits = uncond + cfg_scale * (cond - uncond)
        # relative to the row's max, so that any temperature > 0 divides finite numbers <= 0: as it
        # goes to 0 the distribution goes to the likeliest token instead of to NaN
        logits = (logits - logits.max(-1, keepdim=True).values) / temperature
        probs = filter_logits(logits, top_k, top_p).softmax(-1)
        tokens = torch.cat([tokens, torch.multinomial(probs, 1, generator=generator)], 1)
    return tokens


def toy_sequences(labels, length, vocab, generator):
    """Class c counts up from a random start in steps of c + 1 (mod vocab): a rule per class."""
    start = torch.randint(vocab, (len(labels), 1), generator=generator)
    return (start + (labels[:, None] + 1) * torch.arange(length)) % vocab  # (B, length)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(1)  # layers this small gain nothing from a second thread, which only spin-waits
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    vocab, classes, length = 16, 4, 12
    model = GPT(vocab, classes, length, n_layer=2, n_head=2, n_embd=32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(args.steps):
        labels = torch.randint(classes, (64,), generator=g)
        seq = toy_sequences(labels, length, vocab, g)
        dropped = torch.where(torch.rand(64, generator=g) < 0.1, classes, labels)  # label dropout for CFG
        loss = F.cross_entropy(model(dropped, seq[:, :-1]).flatten(0, 1), seq.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    labels = torch.arange(classes).repeat_interleave(25)
    print(f"toy task: {classes} classes, each its own counting rule over {vocab} tokens, {length} tokens a "
          f"sequence; {args.steps} steps, final loss {loss.item():.3f} (uniform: {math.log(vocab):.3f})")
    print("| sampling | sequences that follow their class's rule |\n| --- | ---: |")
    for name, kw in [("T = 1", {}), ("T = 1, CFG 2", dict(cfg_scale=2.0)), ("top-k 2", dict(top_k=2))]:
        tokens = generate(model, labels, generator=torch.Generator().manual_seed(1), **kw)
        steps = (tokens[:, 1:] - tokens[:, :-1]) % vocab
        ok = (steps == (labels[:, None] + 1) % vocab).all(1).float().mean()
        print(f"| {name} | {ok:.2f} |")


if __name__ == "__main__":
    main()
