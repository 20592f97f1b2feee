"""The whole pipeline in one script: an image tokenizer (IBQ or VQ), a Llama-style autoregressive
generator on its tokens, evaluation, VQ vs IBQ, codebook resizing through the frozen decoder, a report.

Papers
- IBQ: Shi, Luo, Ge, Yang, Shan, Wang, "Taming Scalable Visual Tokenizer for Autoregressive Image
  Generation", arXiv 2412.02692 (2024). Sec. 3: the tokenizer and its quantizer (ibq.py); sec. 4: the
  class-conditional autoregressive generator (Llama blocks: RMSNorm, SwiGLU, rotary positions;
  class token with label dropout for classifier-free guidance; token embeddings initialised from the
  codebook, as the public SEED-Voken code does).
- VQ: van den Oord et al. 2017 (VQ-VAE), Esser et al. 2021 (VQGAN): the baseline quantizer (vq.py).
- HyperHill: Li et al., "Resizing codebook of vector quantization without retraining", Multimedia
  Systems (2023): shrink and grow the trained codebook, decoder frozen (resize.py).

Stages (sub-commands; `all`, the default, runs them in this order and writes report.md):
  tokenizer  conv encoder/decoder around the quantizer -> PSNR, utilization, perplexity
  ar         decoder-only transformer on the tokens    -> validation loss
  sample     class-conditional samples (temperature, top-k, top-p, CFG); a digit classifier trained
             here gives the samples' class accuracy and a Frechet distance in its feature space
  compare    the same tokenizer with the other quantizer: utilization/perplexity/PSNR, VQ vs IBQ
  resize     co-occurrence of the tokens, shrink to 1/2, 1/4, 1/8 and grow to 2x with every method

    python train_ar.py                         # everything on the embedded digits, runs/default
    python train_ar.py all --quick --out /tmp/q
    torchrun --standalone --nproc_per_node 2 train_ar.py tokenizer --quick   # data-parallel
"""
import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

import hilbert
import hyperbolic
import ibq
import resize
import vq

COMMANDS = ("all", "tokenizer", "ar", "sample", "compare", "resize")


# ----------------------------------------------------------------------------------------------
# Configuration: one dataclass, one docstring a field; argparse is built from it.

def checked(cast, ok, what):
    """An argparse type: cast the string, refuse values that fail `ok` (exit 2 with a message)."""
    def parse(s):
        v = cast(s)
        if not ok(v):
            raise argparse.ArgumentTypeError(f"must be {what}, got {s}")
        return v
    parse.__name__ = cast.__name__  # argparse's "invalid int value: 'x'"
    return parse


positive_int = checked(int, lambda v: v > 0, "a positive integer")
nonneg_int = checked(int, lambda v: v >= 0, "an integer >= 0")
codebook_size = checked(int, lambda v: v >= 2, "an integer >= 2")
positive_float = checked(float, lambda v: 0 < v < math.inf, "a positive finite number")
nonneg_float = checked(float, lambda v: 0 <= v < math.inf, "a finite number >= 0")
probability = checked(float, lambda v: 0 < v <= 1, "in (0, 1]")
fraction = checked(float, lambda v: 0 <= v < 1, "in [0, 1)")


def device_name(s):
    if s != "cpu" and not s.startswith("cuda"):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, got {s}")
    if s.startswith("cuda") and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{s} requested but CUDA is not available")
    return s


def opt(default, help, type=None, choices=None):
    return field(default=default, metadata=dict(help=help, type=type, choices=choices))


@dataclass
class Config:
    command: str = opt("all", "stage to run", choices=COMMANDS)
    data: str = opt("digits", "digits (sklearn's 1797 8x8 digits upsampled to 16x16), patches (32x32 "
                    "colour patches of skimage/sklearn sample images, unlabelled), or a PATH: a folder "
                    "of images or an .npz with `images` (N,H,W[,C]) and optional `labels`")
    quantizer: str = opt("ibq", "quantizer of the tokenizer", choices=("ibq", "vq"))
    codebook_size: int = opt(1024, "number of codes K", codebook_size)
    codebook_dim: int = opt(32, "dimension d of a code", positive_int)
    width: int = opt(32, "channels of the tokenizer's encoder/decoder (a multiple of 8)", positive_int)
    beta: float = opt(0.25, "commitment weight of the quantization loss", nonneg_float)
    entropy_weight: float = opt(0.1, "IBQ: weight of the entropy loss (it doubles the quantizer's cost)",
                                nonneg_float)
    temperature: float = opt(0.01, "IBQ: softmax temperature of the entropy loss", positive_float)
    init_scale: float = opt(1.0, "IBQ: scale of the N(0, 1) codebook initialisation", positive_float)
    kmeans_init: bool = opt(False, "initialise the codebook by k-means on the first batch")
    steps: int = opt(1200, "tokenizer training steps (also for each compare run)", positive_int)
    batch_size: int = opt(64, "batch size per process", positive_int)
    lr: float = opt(2e-3, "tokenizer learning rate (AdamW, warmup then cosine)", positive_float)
    ar_steps: int = opt(2000, "AR transformer training steps", positive_int)
    ar_lr: float = opt(1e-3, "AR transformer learning rate", positive_float)
    n_layer: int = opt(4, "AR transformer blocks", positive_int)
    n_head: int = opt(4, "AR attention heads", positive_int)
    n_embd: int = opt(128, "AR width (a multiple of 2 * n_head)", positive_int)
    label_dropout: float = opt(0.1, "share of training labels replaced by the null class (CFG)", fraction)
    codebook_init: bool = opt(True, "initialise the AR token embeddings from the tokenizer's codebook")
    cfg_scale: float = opt(2.0, "classifier-free guidance scale (1 = no guidance)", nonneg_float)
    sample_temperature: float = opt(1.0, "sampling temperature", positive_float)
    top_k: int = opt(0, "sample among the k most likely tokens (0 = all)", nonneg_int)
    top_p: float = opt(1.0, "nucleus sampling: smallest set of tokens with this much mass", probability)
    samples_per_class: int = opt(50, "samples generated for each class", positive_int)
    classifier_steps: int = opt(600, "training steps of the digit classifier", positive_int)
    poincare_epochs: int = opt(20, "epochs of the Poincare embeddings (HyperHill's and the report's figure)",
                               positive_int)
    ckpt_every: int = opt(500, "write checkpoints every this many steps (and at the end)", positive_int)
    resume: bool = opt(False, "continue the run in --out from its checkpoints and config.json")
    out: str = opt("runs/default", "run folder")
    quick: bool = opt(False, "tiny sizes: the whole pipeline in well under a minute (for tests)")
    device: str = opt("cpu", "cpu, cuda or cuda:N (every stage, quantizers included)", device_name)
    seed: int = opt(0, "random seed; same seed, same metrics on the CPU", nonneg_int)


# --quick: sizes for a smoke run; explicit command-line values still win.
QUICK = dict(codebook_size=64, codebook_dim=16, width=16, steps=40, ar_steps=40, n_layer=1,
             n_embd=32, n_head=2, classifier_steps=40, samples_per_class=4, poincare_epochs=2,
             batch_size=32, ckpt_every=20)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in fields(Config):
        meta = f.metadata
        if f.name == "command":
            p.add_argument("command", nargs="?", default=None, choices=meta["choices"],
                           help=f"{meta['help']} (default: all)")
        elif f.type is bool:
            p.add_argument("--" + f.name.replace("_", "-"), action=argparse.BooleanOptionalAction,
                           default=None, help=f"{meta['help']} (default: {f.default})")
        else:
            p.add_argument("--" + f.name.replace("_", "-"), default=None, choices=meta["choices"],
                           type=meta["type"] or f.type, help=f"{meta['help']} (default: {f.default})")
    return p


def parse_config(argv=None):
    """Defaults <- the run's config.json (under --resume, or for a single stage of an existing run)
    <- --quick preset <- explicit arguments."""
    parser = build_parser()
    args = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    cfg = Config()
    out = Path(args.get("out", cfg.out))
    saved = out / "config.json"
    if args.get("resume") and not saved.is_file():
        fail(f"nothing to resume: {saved} not found")
    if args.get("resume") or args.get("command", "all") != "all" and saved.is_file():
        try:
            saved_cfg = {k: v for k, v in json.loads(saved.read_text()).items()
                         if k in Config.__dataclass_fields__ and k not in ("command", "resume")}
        except (OSError, ValueError) as e:
            fail(f"cannot read {saved}: {e}")
        cfg = replace(cfg, **saved_cfg, command="all")
    if args.get("quick"):
        cfg = replace(cfg, **QUICK)
    cfg = replace(cfg, **args)
    if cfg.n_embd % (2 * cfg.n_head):
        parser.error(f"--n-embd {cfg.n_embd} must be a multiple of 2 * --n-head ({2 * cfg.n_head})")
    if cfg.width % 8:
        parser.error(f"--width {cfg.width} must be a multiple of 8 (group norm)")
    return cfg


def fail(message):
    """One-line error, exit status 1 (no traceback for a user's mistake)."""
    print(f"train_ar.py: error: {message}", file=sys.stderr)
    sys.exit(1)


class Env(NamedTuple):
    """Where this process runs: its rank among `world` processes, its device, the run folder."""
    rank: int
    world: int
    device: torch.device
    out: Path

    def log(self, *a):
        if self.rank == 0:
            tqdm.write(" ".join(str(x) for x in a))


# ----------------------------------------------------------------------------------------------
# Data: embedded, nothing downloaded. Images float32 (N, C, H, W) in [0, 1]; labels int64 (N,).

class Data(NamedTuple):
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    n_classes: int  # 1 for unlabelled data
    labelled: bool


def split(x, y, labelled, val_share=0.2):
    """A fixed split (seed 0, whatever --seed is), so that every run validates on the same images."""
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_val = max(1, int(len(x) * val_share))
    val, train = perm[:n_val], perm[n_val:]
    n_classes = int(y.max()) + 1 if labelled else 1
    return Data(x[train], y[train], x[val], y[val], n_classes, labelled)


def load_digits():
    from sklearn.datasets import load_digits as sk_digits
    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0  # (1797, 1, 8, 8), 16 grey levels
    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False).clamp(0, 1)  # (N, 1, 16, 16)
    return split(x, torch.tensor(d.target, dtype=torch.int64), True)


def load_patches(n_per_image=500, size=32):
    """32x32 crops of the natural images shipped with scikit-image and scikit-learn (halved first,
    so that a patch holds an object's part rather than flat texture)."""
    import skimage.data
    from sklearn.datasets import load_sample_images
    images = [getattr(skimage.data, n)() for n in
              ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")]
    images += list(load_sample_images().images)
    rng = np.random.default_rng(0)
    crops = []
    for im in images:
        t = torch.tensor(im[..., :3], dtype=torch.float32).permute(2, 0, 1)[None] / 255.0  # (1, 3, H, W)
        t = F.avg_pool2d(t, 2)[0]
        ys = rng.integers(0, t.shape[1] - size + 1, n_per_image)
        xs = rng.integers(0, t.shape[2] - size + 1, n_per_image)
        crops += [t[:, a:a + size, b:b + size] for a, b in zip(ys, xs)]
    x = torch.stack(crops)  # (N, 3, 32, 32)
    return split(x, torch.zeros(len(x), dtype=torch.int64), False)


def load_path(path, size=32):
    path = Path(path)
    if not path.exists():
        fail(f"--data {path}: no such file or folder (expected digits, patches, a folder of images or an .npz)")
    if path.is_dir():
        from PIL import Image
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".gif"))
        if not files:
            fail(f"--data {path}: the folder holds no .png/.jpg/.bmp/.gif image")
        try:
            ims = [Image.open(p) for p in files]
            mode = "L" if all(im.mode in ("L", "1", "I", "I;16") for im in ims) else "RGB"
            arr = np.stack([np.asarray(im.convert(mode).resize((size, size))) for im in ims])
        except Exception as e:  # PIL raises many types for a bad file
            fail(f"--data {path}: cannot read an image: {e}")
        images, labels = arr, None
    else:
        try:
            with np.load(path) as z:
                images = z["images"]
                labels = z["labels"] if "labels" in z else None
        except Exception as e:
            fail(f"--data {path}: cannot read an .npz with an `images` array: {e}")
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) < 2:
        fail(f"--data {path}: images must be (N, H, W) or (N, H, W, 1|3) with N >= 2, got {images.shape}")
    if images.shape[1] % 4 or images.shape[2] % 4:
        fail(f"--data {path}: image height and width must be multiples of 4, got {images.shape[1:3]}")
    x = torch.tensor(images, dtype=torch.float32).permute(0, 3, 1, 2)  # (N, C, H, W)
    if images.dtype == np.uint8:
        x = x / 255.0
    if not (torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
        fail(f"--data {path}: float images must lie in [0, 1]")
    if labels is None:
        return split(x, torch.zeros(len(x), dtype=torch.int64), False)
    labels = np.asarray(labels)
    if labels.shape != (len(x),) or labels.dtype.kind not in "iu" or labels.min() < 0:
        fail(f"--data {path}: labels must be N non-negative integers, got {labels.shape} {labels.dtype}")
    return split(x, torch.tensor(labels, dtype=torch.int64), True)


def load_data(name):
    return load_digits() if name == "digits" else load_patches() if name == "patches" else load_path(name)


def batch_indices(n, batch_size, seed, step, env):
    """This process's batch at `step`: a pure function of the step (DistributedSampler, epoch =
    step // batches-per-epoch), so a resumed run sees exactly the batches the killed one would have."""
    sampler = DistributedSampler(range(n), num_replicas=env.world, rank=env.rank, shuffle=True,
                                 seed=seed, drop_last=True)
    per_epoch = len(sampler) // batch_size
    epoch, i = divmod(step, per_epoch)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler)[i * batch_size:(i + 1) * batch_size])


# ----------------------------------------------------------------------------------------------
# Checkpoints (atomic) and the shared training loop.

def save_atomic(obj, path):
    """Write to a temporary file, then rename: a run killed mid-write leaves the old checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_json(obj, path):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def load_checkpoint(path):
    if not path.is_file():
        fail(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file raises RuntimeError, EOFError, pickle errors, ...
        fail(f"cannot read checkpoint {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")


def lr_at(step, steps, lr):
    """Linear warmup over 5% of the steps, then cosine decay to lr / 10."""
    warm = max(1, steps // 20)
    if step < warm:
        return lr * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train(name, model, model_args, loss_fn, n_train, steps, lr, cfg, env, *, weight_decay=0.0,
          evaluate=None, resume=False):
    """Train `model` for `steps` steps of AdamW; checkpoint to OUT/<name>.pt every --ckpt-every steps
    and at the end; with `resume`, continue from that file. loss_fn(model, batch_idx, step) -> loss.
    `evaluate()` (optional) -> float, recorded at every checkpoint. Returns the history dict."""
    path = env.out / f"{name}.pt"
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    step, history = 0, {"loss": [], "val": []}
    if resume and path.exists():
        ck = load_checkpoint(path)
        try:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            step, history = int(ck["step"]), ck["history"]
        except (KeyError, RuntimeError, ValueError) as e:
            fail(f"checkpoint {path} does not match this configuration: {str(e).splitlines()[0]}")
        torch.set_rng_state(ck["rng"])
    wrapped = DDP(model) if env.world > 1 else model
    model.train()
    bar = tqdm(range(step, steps), desc=name, disable=env.rank != 0, leave=False, mininterval=2)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr)
        loss = loss_fn(wrapped, batch_indices(n_train, cfg.batch_size, cfg.seed, step, env), step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history["loss"].append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == steps:
            if evaluate is not None:
                history["val"].append([step + 1, evaluate()])
                model.train()
            if env.rank == 0:
                save_atomic(dict(model=model.state_dict(), optimizer=opt.state_dict(), step=step + 1,
                                 config=asdict(cfg), model_args=model_args, history=history,
                                 rng=torch.get_rng_state()), path)
    barrier(env)
    model.eval()
    return history


def barrier(env):
    if env.world > 1:
        dist.barrier()


# ----------------------------------------------------------------------------------------------
# Tokenizer: conv encoder (x4 down) -> quantizer -> conv decoder (x4 up).

class ResBlock(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.block = nn.Sequential(nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
                                   nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x):
        return x + self.block(x)


def make_quantizer(kind, size, dim, beta=0.25, entropy_weight=0.0, temperature=0.01, init_scale=1.0,
                   kmeans_init=False):
    if kind == "vq":
        return vq.VectorQuantizer(size, dim, beta=beta, kmeans_init=kmeans_init)
    q = ibq.IndexBackpropQuantizer(size, dim, beta=beta, entropy_weight=entropy_weight, temperature=temperature,
                                   init="kmeans" if kmeans_init else "normal")
    with torch.no_grad():
        q.codebook.mul_(init_scale)
    return q


class Tokenizer(nn.Module):
    def __init__(self, channels, width, quantizer, codebook_size, codebook_dim, beta, entropy_weight,
                 temperature, init_scale=1.0, kmeans_init=False):
        super().__init__()
        w = width
        # Residual blocks at 1/2 and 1/4 resolution only: at full resolution they would cost 4x as
        # much per layer and add little to a tokenizer whose information passes through 1/4 anyway.
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, w, 3, padding=1),
            nn.Conv2d(w, w, 4, stride=2, padding=1), ResBlock(w),  # (B, w, H/2, W/2)
            nn.Conv2d(w, w, 4, stride=2, padding=1), ResBlock(w),  # (B, w, H/4, W/4)
            nn.GroupNorm(8, w), nn.SiLU(), nn.Conv2d(w, codebook_dim, 1))  # (B, d, H/4, W/4)
        self.quantizer = make_quantizer(quantizer, codebook_size, codebook_dim, beta, entropy_weight,
                                        temperature, init_scale, kmeans_init)
        self.decoder = nn.Sequential(
            nn.Conv2d(codebook_dim, w, 3, padding=1), ResBlock(w),
            nn.Upsample(scale_factor=2), nn.Conv2d(w, w, 3, padding=1), ResBlock(w),  # (B, w, H/2, W/2)
            nn.Upsample(scale_factor=2), nn.Conv2d(w, w, 3, padding=1),  # (B, w, H, W)
            nn.GroupNorm(8, w), nn.SiLU(), nn.Conv2d(w, channels, 3, padding=1))

    def forward(self, x):
        """x (B, C, H, W) in [-1, 1] -> (reconstruction, quantization loss, indices (B, H/4, W/4))."""
        z_q, qloss, idx = self.quantizer(self.encoder(x))
        return self.decoder(z_q), qloss, idx


def tokenizer_args(cfg, data, quantizer):
    return dict(channels=data.train_x.shape[1], width=cfg.width, quantizer=quantizer,
                codebook_size=cfg.codebook_size, codebook_dim=cfg.codebook_dim, beta=cfg.beta,
                entropy_weight=cfg.entropy_weight, temperature=cfg.temperature, init_scale=cfg.init_scale,
                kmeans_init=cfg.kmeans_init)


@torch.no_grad()
def encode(model, x, batch=512):
    """Images in [0, 1] -> (encoder outputs z (N, d, h, w), token indices (N, h, w))."""
    zs, idxs = [], []
    for i in range(0, len(x), batch):
        z = model.encoder(x[i:i + batch] * 2 - 1)
        zs.append(z)
        idxs.append(model.quantizer(z)[2])
    return torch.cat(zs), torch.cat(idxs)


@torch.no_grad()
def decode(model, z_q):
    return ((model.decoder(z_q) + 1) / 2).clamp(0, 1)


def psnr(x, y):
    """Mean over images of 10 log10(1 / MSE), images in [0, 1]."""
    mse = ((x - y) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


def code_stats(idx, k):
    """Utilization (share of the k codes used at least once) and perplexity of the token counts."""
    counts = vq.usage(idx.reshape(-1).cpu().numpy(), k)
    return float((np.asarray(counts) > 0).mean()), float(vq.perplexity(counts)), np.asarray(counts)


@torch.no_grad()
def evaluate_tokenizer(model, data, k):
    model.eval()
    _, idx_train = encode(model, data.train_x)
    utilization, ppl, counts = code_stats(idx_train, k)
    recon = decode(model, model.quantizer(model.encoder(data.val_x * 2 - 1))[0])
    return dict(psnr=psnr(recon, data.val_x), utilization=utilization, perplexity=ppl), recon, counts


def train_tokenizer(name, quantizer, cfg, data, env, resume):
    args = tokenizer_args(cfg, data, quantizer)
    torch.manual_seed(cfg.seed)
    model = Tokenizer(**args).to(env.device)

    def loss_fn(m, b, step):
        x = data.train_x[b] * 2 - 1
        recon, qloss, _ = m(x)
        return F.mse_loss(recon, x) + qloss

    t0 = time.perf_counter()
    history = train(name, model, args, loss_fn, len(data.train_x), cfg.steps, cfg.lr, cfg, env,
                    resume=resume)
    metrics, recon, counts = evaluate_tokenizer(model, data, cfg.codebook_size)
    env.log(f"{name}: {quantizer} K={cfg.codebook_size} d={cfg.codebook_dim}  val PSNR {metrics['psnr']:.2f} dB"
            f"  utilization {metrics['utilization']:.3f}  perplexity {metrics['perplexity']:.1f}"
            f"  ({cfg.steps} steps, {time.perf_counter() - t0:.0f} s)")
    return model, metrics, recon, counts, history


def load_tokenizer(env, name="tokenizer"):
    ck = load_checkpoint(env.out / f"{name}.pt")
    model = Tokenizer(**ck["model_args"]).to(env.device)
    model.load_state_dict(ck["model"])
    return model.eval(), ck


# ----------------------------------------------------------------------------------------------
# AR generator: a decoder-only transformer in the Llama style (IBQ paper sec. 4).

class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate(x, cos, sin):
    """Rotary positions (Su et al. 2021), the half-split form: x (B, nh, T, hd), cos/sin (T, hd/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
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
        assert kv is None or T == 1, "with a KV cache, feed one token at a time"
        y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)  # (B, nh, T, hd)
        return self.proj(y.transpose(1, 2).reshape(B, T, C)), (k, v)


class Block(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        hidden = 4 * ((int(8 * n_embd / 3) + 3) // 4)  # SwiGLU: 2/3 of 4x width keeps the parameter count
        self.norm1, self.attn = RMSNorm(n_embd), Attention(n_embd, n_head)
        self.norm2 = RMSNorm(n_embd)
        self.gate = nn.Linear(n_embd, hidden, bias=False)
        self.up = nn.Linear(n_embd, hidden, bias=False)
        self.down = nn.Linear(hidden, n_embd, bias=False)

    def forward(self, x, cos, sin, kv=None):
        a, kv = self.attn(self.norm1(x), cos, sin, kv)
        x = x + a
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h)), kv


class GPT(nn.Module):
    """Sequence [class] t_1 ... t_n; the logits at position i predict t_{i+1}. Class n_classes is the
    null class of classifier-free guidance (labels dropped in training)."""

    def __init__(self, vocab_size, n_classes, n_tokens, n_layer, n_head, n_embd):
        super().__init__()
        self.n_classes, self.n_tokens = n_classes, n_tokens
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.cls_emb = nn.Embedding(n_classes + 1, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.norm = RMSNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        hd = n_embd // n_head
        freq = 1.0 / 10000 ** (torch.arange(0, hd, 2).float() / hd)  # (hd/2,)
        angle = torch.arange(n_tokens + 1).float()[:, None] * freq  # (T, hd/2)
        self.register_buffer("cos", angle.cos(), persistent=False)
        self.register_buffer("sin", angle.sin(), persistent=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer) if name.endswith(("proj.weight", "down.weight")) else 0.02)

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
    """Sample model.n_tokens tokens for each label (B,) -> (B, n_tokens). With cfg_scale != 1 the batch
    also runs with the null class and logits = uncond + cfg_scale * (cond - uncond)."""
    guided = cfg_scale != 1.0
    lab = torch.cat([labels, torch.full_like(labels, model.n_classes)]) if guided else labels
    tokens = labels.new_zeros(len(labels), 0)
    cache = [] if use_cache else None
    for i in range(model.n_tokens):
        inp = tokens[:, -1:] if use_cache and i > 0 else tokens
        logits = model(lab, torch.cat([inp, inp]) if guided else inp, cache)[:, -1].float()  # (B', V)
        if guided:
            cond, uncond = logits.chunk(2)
            logits = uncond + cfg_scale * (cond - uncond)
        probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
        tokens = torch.cat([tokens, torch.multinomial(probs, 1, generator=generator)], 1)
    return tokens


def train_ar(cfg, data, tokenizer, env, resume):
    _, idx_train = encode(tokenizer, data.train_x)
    _, idx_val = encode(tokenizer, data.val_x)
    train_tok, val_tok = idx_train.flatten(1), idx_val.flatten(1)  # (N, h*w), raster order
    args = dict(vocab_size=tokenizer.quantizer.codebook.shape[0], n_classes=data.n_classes,
                n_tokens=train_tok.shape[1], n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd)
    torch.manual_seed(cfg.seed + 1)
    model = GPT(**args)
    if cfg.codebook_init:
        model.init_from_codebook(tokenizer.quantizer.codebook)
    model.to(env.device)

    def loss_fn(m, b, step):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * env.world + env.rank)
        labels = data.train_y[b]
        drop = (torch.rand(len(b), generator=g) < cfg.label_dropout).to(labels.device)
        labels = torch.where(drop, data.n_classes, labels)  # the null class, for CFG
        logits = m(labels, train_tok[b, :-1])  # (B, n, V)
        return F.cross_entropy(logits.flatten(0, 1), train_tok[b].flatten())

    @torch.no_grad()
    def val_loss():
        model.eval()
        logits = model(data.val_y, val_tok[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), val_tok.flatten()).item()

    t0 = time.perf_counter()
    history = train("ar", model, args, loss_fn, len(train_tok), cfg.ar_steps, cfg.ar_lr, cfg, env,
                    weight_decay=0.05, evaluate=val_loss, resume=resume)
    metrics = dict(val_loss=val_loss())
    env.log(f"ar: {cfg.n_layer} layers x {cfg.n_embd}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params"
            f"  val loss {metrics['val_loss']:.3f} (uniform: {math.log(args['vocab_size']):.3f})"
            f"  ({cfg.ar_steps} steps, {time.perf_counter() - t0:.0f} s)")
    return model, metrics, history


def load_ar(env):
    ck = load_checkpoint(env.out / "ar.pt")
    model = GPT(**ck["model_args"]).to(env.device)
    model.load_state_dict(ck["model"])
    return model.eval(), ck


# ----------------------------------------------------------------------------------------------
# Evaluation of samples: a small digit classifier trained here, its accuracy on the samples and
# the Frechet distance between real validation images and samples in its feature space.

class Classifier(nn.Module):
    def __init__(self, channels, n_classes, size):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (size // 4) ** 2, 128), nn.ReLU())  # (B, 128)
        self.head = nn.Linear(128, n_classes)

    def forward(self, x):
        return self.head(self.features(x * 2 - 1))


def train_classifier(cfg, data, env, resume):
    args = dict(channels=data.train_x.shape[1], n_classes=data.n_classes, size=data.train_x.shape[2])
    torch.manual_seed(cfg.seed + 2)
    model = Classifier(**args).to(env.device)

    def loss_fn(m, b, step):
        return F.cross_entropy(m(data.train_x[b]), data.train_y[b])

    train("classifier", model, args, loss_fn, len(data.train_x), cfg.classifier_steps, 2e-3, cfg, env,
          resume=resume)
    return model


@torch.no_grad()
def accuracy(classifier, x, y):
    return float((classifier(x).argmax(1) == y).float().mean())


def frechet_distance(a, b):
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), features (N, f) float64.
    The symmetric form needs only eigendecompositions (no general matrix square root)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(w.clip(0))) @ v.T
    cross = np.sqrt(np.linalg.eigvalsh(root_a @ s_b @ root_a).clip(0)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross)


@torch.no_grad()
def sample_images(cfg, data, tokenizer, model, env):
    labels = torch.arange(data.n_classes, device=env.device).repeat_interleave(cfg.samples_per_class)
    g = torch.Generator(env.device).manual_seed(cfg.seed)
    tokens = generate(model, labels, temperature=cfg.sample_temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                      cfg_scale=cfg.cfg_scale, generator=g)
    h, w = data.train_x.shape[2] // 4, data.train_x.shape[3] // 4
    images = decode(tokenizer, tokenizer.quantizer.decode(tokens.view(-1, h, w)))  # (N, C, H, W)
    return images, labels


# ----------------------------------------------------------------------------------------------
# Resize: HyperHill and baselines through the frozen decoder (resize.py).

SHRINK = ("hyperhill", "hilbert", "random", "usage", "kmeans")
GROW = ("hyperhill", "hilbert", "random", "split")


@torch.no_grad()
def requantize(tokenizer, codebook, z):
    """Encoder outputs z (N, d, h, w) -> (z_q, idx (N, h, w)) with a new codebook, by the tokenizer's
    own rule (a fresh quantizer of its kind holding the codebook): nearest code for VQ, argmax z.e
    for IBQ. Under argmax z.e a code interpolated between two others never wins (z.(t a + (1 - t) b)
    <= max(z.a, z.b)), so growing by interpolation cannot change an IBQ tokenizer's tokens; the
    Euclidean rule instead would cost the IBQ tokenizer ~3 dB before any resizing."""
    kind = "ibq" if isinstance(tokenizer.quantizer, ibq.IndexBackpropQuantizer) else "vq"
    q = make_quantizer(kind, len(codebook), codebook.shape[1]).to(z.device).eval()
    q.codebook.data = torch.as_tensor(codebook, dtype=z.dtype, device=z.device)
    out = [q(z[i:i + 512]) for i in range(0, len(z), 512)]
    return torch.cat([o[0] for o in out]), torch.cat([o[2] for o in out])


def resize_sweep(cfg, data, tokenizer, env):
    z_train, idx_train = encode(tokenizer, data.train_x)
    z_val, _ = encode(tokenizer, data.val_x)
    k = cfg.codebook_size
    codebook = tokenizer.quantizer.codebook.detach().cpu().numpy()
    counts = vq.usage(idx_train.reshape(-1).cpu().numpy(), k)
    cooc = resize.cooccurrence(idx_train.cpu().numpy(), k, window=1)
    rows = []

    def score(method, new):
        rows.append(dict(method=method, size=len(new),
                         psnr=psnr(decode(tokenizer, requantize(tokenizer, new, z_val)[0]), data.val_x),
                         utilization=code_stats(requantize(tokenizer, new, z_train)[1], len(new))[0]))

    score("original", codebook)
    jobs = [(m, k // f) for m in SHRINK for f in (2, 4, 8) if k // f >= 2] + [(m, 2 * k) for m in GROW]
    for method, size in tqdm(jobs, desc="resize", disable=env.rank != 0, leave=False):
        if size < k:
            new, _ = resize.shrink(codebook, size, method=method, usage=counts, cooc=cooc, seed=cfg.seed,
                                   epochs=cfg.poincare_epochs)
        else:
            new = resize.grow(codebook, size, method=method, usage=counts, cooc=cooc, seed=cfg.seed,
                              epochs=cfg.poincare_epochs)
        score(method, np.asarray(new))
    return rows, codebook, counts, cooc


# ----------------------------------------------------------------------------------------------
# Figures and report (rank 0 only). Matplotlib with the Agg backend, imported when first needed.

def plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot
    return pyplot


def as_rgb(images):
    """(N, C, H, W) tensor in [0, 1] -> (N, H, W) or (N, H, W, 3) numpy for imshow."""
    a = images.detach().cpu().numpy()
    return a[:, 0] if a.shape[1] == 1 else a.transpose(0, 2, 3, 1)


def image_grid(rows, path, titles=None):
    """rows: list of (N, C, H, W) tensors, one figure row each."""
    p = plt()
    n = max(len(r) for r in rows)
    fig, axes = p.subplots(len(rows), n, figsize=(n * 0.8, len(rows) * 0.85), squeeze=False)
    for i, r in enumerate(rows):
        for j, ax in enumerate(axes[i]):
            if j < len(r):
                ax.imshow(as_rgb(r[j:j + 1])[0], cmap="gray", vmin=0, vmax=1)
            ax.set_axis_off()
        if titles:
            axes[i][0].set_title(titles[i], fontsize=7, loc="left")
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=100)
    p.close(fig)


def figure_usage(stats, path):
    p = plt()
    fig, ax = p.subplots(figsize=(6, 3.5))
    for name, counts in stats.items():
        c = np.sort(np.asarray(counts))[::-1]
        ax.plot(np.arange(1, len(c) + 1), np.maximum(c, 0.8), label=f"{name}: {(c > 0).mean():.0%} of codes used")
    ax.set(yscale="log", xlabel="code (sorted by use)", ylabel="tokens on the training set",
           title="Codebook usage, VQ vs IBQ")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    p.close(fig)


def figure_resize(rows, path):
    p = plt()
    fig, ax = p.subplots(figsize=(6, 4))
    base = next(r for r in rows if r["method"] == "original")
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] != "original"):
        pts = sorted([(r["size"], r["psnr"]) for r in rows if r["method"] == method] + [(base["size"], base["psnr"])])
        ax.plot(*zip(*pts), marker="o", label=method)
    ax.axvline(base["size"], color="gray", lw=0.5)
    ax.set(xscale="log", xlabel="codebook size", ylabel="validation PSNR (dB)",
           title="Resized codebooks through the frozen decoder")
    ax.set_xscale("log", base=2)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    p.close(fig)


def figure_poincare(cooc, counts, k, epochs, seed, path):
    pairs, weights = (np.asarray(a) for a in cooc)
    emb = np.asarray(hyperbolic.fit(pairs, k, dim=2, weights=weights.astype(np.float64), epochs=epochs, seed=seed,
                                    progress=False))
    p = plt()
    fig, ax = p.subplots(figsize=(5, 5))
    ax.add_patch(p.Circle((0, 0), 1, fill=False, color="gray"))
    for a, b in pairs[np.argsort(weights)[::-1][:400]]:  # the strongest edges
        ax.plot(*emb[[a, b]].T, color="steelblue", lw=0.3, alpha=0.5)
    used = np.asarray(counts) > 0
    sc = ax.scatter(*emb[used].T, c=np.log10(np.asarray(counts)[used]), s=6, cmap="viridis")
    fig.colorbar(sc, ax=ax, shrink=0.7, label="log10 uses")
    ax.set(xlim=(-1.02, 1.02), ylim=(-1.02, 1.02), aspect="equal",
           title="Co-occurrence graph of the codes, Poincaré disk")
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    p.close(fig)


def figure_hilbert(codebook, counts, path):
    x = codebook - codebook.mean(0)
    xy = x @ np.linalg.svd(x, full_matrices=False)[2][:2].T  # (K, 2): the top two principal axes
    perm = np.asarray(hilbert.order(xy, bits=8))
    p = plt()
    fig, ax = p.subplots(figsize=(5, 5))
    ax.plot(*xy[perm].T, color="gray", lw=0.5)
    ax.scatter(*xy[perm].T, c=np.arange(len(perm)), s=8, cmap="plasma")
    ax.scatter(*xy[np.asarray(counts) == 0].T, marker="x", color="black", s=10, label="unused codes")
    ax.set(title="Hilbert path through the codebook (2-D PCA)", aspect="equal")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    p.close(fig)


def smooth(y, n=25):
    """(steps, running mean over n steps) of a per-step curve; a step is the one its mean ends at."""
    y, n = np.asarray(y, dtype=np.float64), min(n, len(y))
    return np.arange(n, len(y) + 1), np.convolve(y, np.ones(n) / n, mode="valid")


def figure_curves(out, path):
    p = plt()
    fig, axes = p.subplots(1, 3, figsize=(12, 3.2))
    for name, ax, title in (("tokenizer", axes[0], "tokenizer loss"), ("ar", axes[1], "AR cross-entropy"),
                            ("classifier", axes[2], "classifier cross-entropy")):
        for f in sorted(out.glob(f"{name}*.pt")) + sorted(out.glob(f"compare_*.pt") if name == "tokenizer" else []):
            ck = torch.load(f, map_location="cpu", weights_only=True)
            label = ck["model_args"].get("quantizer", "train") if name == "tokenizer" else "train"
            ax.plot(*smooth(ck["history"]["loss"]), label=label, lw=1)
            if ck["history"]["val"]:
                ax.plot(*zip(*ck["history"]["val"]), marker="o", label="validation")
        ax.set(title=title, xlabel="step", yscale="linear" if name == "tokenizer" else "log")  # IBQ's entropy term can be < 0
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    p.close(fig)


def update_metrics(env, **parts):
    path = env.out / "metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics.update(parts)
    write_json(metrics, path)
    return metrics


FIGURES = [("reconstructions.png", "Validation digits (top) and their reconstructions (bottom)"),
           ("samples.png", "Class-conditional samples, one row per class"),
           ("codebook_usage.png", "Codebook usage, VQ vs IBQ, same encoder, data and steps"),
           ("resize_psnr.png", "PSNR against codebook size, per resize method (decoder frozen)"),
           ("poincare.png", "The codes' co-occurrence graph embedded in the Poincaré disk"),
           ("hilbert_path.png", "The Hilbert path through the codebook, 2-D projection"),
           ("curves.png", "Training curves")]


def write_report(cfg, env):
    m = json.loads((env.out / "metrics.json").read_text()) if (env.out / "metrics.json").exists() else {}
    f = lambda v, spec=".3f": "n/a" if v is None else format(v, spec)  # noqa: E731
    lines = [f"# Run report: {env.out}", "",
             f"data `{cfg.data}`, quantizer `{cfg.quantizer}`, K = {cfg.codebook_size}, d = {cfg.codebook_dim}, "
             f"seed {cfg.seed}; full configuration in config.json.", ""]
    if "tokenizer" in m:
        t = m["tokenizer"]
        lines += ["| tokenizer | val PSNR (dB) | utilization | perplexity |", "| --- | --- | --- | --- |",
                  f"| {t['quantizer']} K={t['codebook_size']} | {f(t['psnr'], '.2f')} | {f(t['utilization'])} "
                  f"| {f(t['perplexity'], '.1f')} |", ""]
    if "ar" in m or "samples" in m:
        s = m.get("samples", {})
        lines += ["| AR val loss | samples' class accuracy | Fréchet distance | classifier val accuracy |",
                  "| --- | --- | --- | --- |",
                  f"| {f(m.get('ar', {}).get('val_loss'))} | {f(s.get('class_accuracy'))} "
                  f"| {f(s.get('frechet_distance'), '.2f')} | {f(s.get('classifier_accuracy'))} |", ""]
    if "compare" in m:
        lines += ["| quantizer | utilization | perplexity | val PSNR (dB) |", "| --- | --- | --- | --- |"]
        lines += [f"| {q} | {f(v['utilization'])} | {f(v['perplexity'], '.1f')} | {f(v['psnr'], '.2f')} |"
                  for q, v in m["compare"].items()] + [""]
    if "resize" in m:
        lines += ["| method | size | val PSNR (dB) | utilization |", "| --- | --- | --- | --- |"]
        lines += [f"| {r['method']} | {r['size']} | {f(r['psnr'], '.2f')} | {f(r['utilization'])} |"
                  for r in m["resize"]] + [""]
    for name, caption in FIGURES:
        if (env.out / name).exists():
            lines += [f"**{caption}**", "", f"![{caption}]({name})", ""]
    (env.out / "report.md").write_text("\n".join(lines))


# ----------------------------------------------------------------------------------------------
# Stages. Each reads what earlier stages left in the run folder, so any one can run on its own.

def stage_tokenizer(cfg, data, env, resume):
    model, metrics, recon, counts, _ = train_tokenizer("tokenizer", cfg.quantizer, cfg, data, env, resume)
    if env.rank == 0:
        np.savez(env.out / "reconstructions.npz", images=data.val_x.cpu().numpy(), recon=recon.cpu().numpy())
        image_grid([data.val_x[:16], recon[:16]], env.out / "reconstructions.png")
        update_metrics(env, tokenizer=dict(quantizer=cfg.quantizer, codebook_size=cfg.codebook_size, **metrics))
    return model


def stage_ar(cfg, data, env, resume, tokenizer=None):
    tokenizer = tokenizer or load_tokenizer(env)[0]
    model, metrics, _ = train_ar(cfg, data, tokenizer, env, resume)
    if env.rank == 0:
        update_metrics(env, ar=metrics)
    return model


def stage_sample(cfg, data, env, resume, tokenizer=None, model=None):
    tokenizer = tokenizer or load_tokenizer(env)[0]
    model = model or load_ar(env)[0]
    t0 = time.perf_counter()
    classifier = train_classifier(cfg, data, env, resume) if data.labelled else None
    if env.rank != 0:
        return
    images, labels = sample_images(cfg, data, tokenizer, model, env)
    np.savez(env.out / "samples.npz", images=images.cpu().numpy(), labels=labels.cpu().numpy())
    image_grid([images[labels == c][:10] for c in range(data.n_classes)], env.out / "samples.png")
    metrics = dict(class_accuracy=None, frechet_distance=None, classifier_accuracy=None)
    if classifier is not None:
        classifier.eval()
        with torch.no_grad():
            real = classifier.features(data.val_x * 2 - 1).double().cpu().numpy()
            fake = classifier.features(images * 2 - 1).double().cpu().numpy()
        metrics = dict(class_accuracy=accuracy(classifier, images, labels), frechet_distance=frechet_distance(real, fake),
                       classifier_accuracy=accuracy(classifier, data.val_x, data.val_y))
    update_metrics(env, samples=metrics)
    f = lambda v, spec: "n/a (unlabelled data)" if v is None else format(v, spec)  # noqa: E731
    env.log(f"sample: {len(images)} samples (CFG {cfg.cfg_scale}, T {cfg.sample_temperature})"
            f"  class accuracy {f(metrics['class_accuracy'], '.3f')}"
            f"  Frechet distance {f(metrics['frechet_distance'], '.2f')}"
            f"  (classifier val accuracy {f(metrics['classifier_accuracy'], '.3f')}, {time.perf_counter() - t0:.0f} s)")


def stage_compare(cfg, data, env, resume, tokenizer=None):
    """Both quantizers, same encoder, data, steps and K. The main tokenizer counts as its quantizer's
    run when it is there; the other one trains into compare_<quantizer>.pt."""
    results, counts = {}, {}
    for q in ("vq", "ibq"):
        if q == cfg.quantizer:
            model = tokenizer or load_tokenizer(env)[0]
            m, _, c = evaluate_tokenizer(model, data, cfg.codebook_size)
        else:
            _, m, _, c, _ = train_tokenizer(f"compare_{q}", q, cfg, data, env, resume)
        results[q], counts[q.upper()] = m, c
    if env.rank == 0:
        update_metrics(env, compare=results)
        figure_usage(counts, env.out / "codebook_usage.png")
        env.log("compare: " + "  ".join(f"{q} utilization {v['utilization']:.3f} perplexity {v['perplexity']:.1f}"
                                         f" PSNR {v['psnr']:.2f}" for q, v in results.items()))


def stage_resize(cfg, data, env, tokenizer=None):
    if env.rank != 0:
        return
    tokenizer = tokenizer or load_tokenizer(env)[0]
    t0 = time.perf_counter()
    rows, codebook, counts, cooc = resize_sweep(cfg, data, tokenizer, env)
    update_metrics(env, resize=rows)
    figure_resize(rows, env.out / "resize_psnr.png")
    figure_hilbert(codebook, counts, env.out / "hilbert_path.png")
    figure_poincare(cooc, counts, cfg.codebook_size, cfg.poincare_epochs, cfg.seed, env.out / "poincare.png")
    best = {}
    for r in rows[1:]:
        if r["size"] < cfg.codebook_size and r["psnr"] > best.get(r["size"], ("", -1))[1]:
            best[r["size"]] = (r["method"], r["psnr"])
    env.log(f"resize: {len(rows) - 1} resized codebooks (original {rows[0]['psnr']:.2f} dB); best shrink "
            + ", ".join(f"{s}: {m} {p:.2f} dB" for s, (m, p) in sorted(best.items()))
            + f"  ({time.perf_counter() - t0:.0f} s)")


def setup(cfg):
    """Process group under torchrun (gloo on the CPU, nccl on CUDA); the run folder; determinism."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    device = torch.device(cfg.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
        if "OMP_NUM_THREADS" not in os.environ:
            # These layers are too small to gain from a second thread, and on a busy machine its
            # spin-waiting makes a step many times slower. One thread also fixes the sum order.
            torch.set_num_threads(1)
    out = Path(cfg.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json(asdict(cfg), out / "config.json")
    barrier(Env(rank, world, device, out))
    return Env(rank, world, device, out)


def main(argv=None):
    cfg = parse_config(argv)
    env = setup(cfg)
    t0 = time.perf_counter()
    data = load_data(cfg.data)
    if cfg.batch_size * env.world > len(data.train_x):
        fail(f"--batch-size {cfg.batch_size} x {env.world} processes exceeds the {len(data.train_x)} training images")
    data = Data(*(t.to(env.device) for t in data[:4]), data.n_classes, data.labelled)
    if cfg.resume:  # the first checkpoint of the command must be there; later stages may start fresh
        first = {"all": "tokenizer", "tokenizer": "tokenizer", "ar": "ar", "sample": "ar",
                 "compare": f"compare_{'vq' if cfg.quantizer == 'ibq' else 'ibq'}", "resize": "tokenizer"}[cfg.command]
        load_checkpoint(env.out / f"{first}.pt")
    env.log(f"data {cfg.data}: {len(data.train_x)} train / {len(data.val_x)} val images "
            f"{tuple(data.train_x.shape[1:])}, {data.n_classes} classes; {env.world} process(es) on {env.device}")
    c, tok, ar_model = cfg.command, None, None
    if c in ("all", "tokenizer"):
        tok = stage_tokenizer(cfg, data, env, cfg.resume)
    if c in ("all", "ar"):
        ar_model = stage_ar(cfg, data, env, cfg.resume, tok)
    if c in ("all", "sample"):
        stage_sample(cfg, data, env, cfg.resume, tok, ar_model)
    if c in ("all", "compare"):
        stage_compare(cfg, data, env, cfg.resume, tok)
    if c in ("all", "resize"):
        stage_resize(cfg, data, env, tok)
    if env.rank == 0:
        figure_curves(env.out, env.out / "curves.png")
        write_report(cfg, env)
        env.log(f"done: {c} in {time.perf_counter() - t0:.0f} s; report {env.out / 'report.md'}")
    if env.world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
