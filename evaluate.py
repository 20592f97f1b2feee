"""How a run of train_ar.py is judged and reported: the judge of the samples, the resized codebooks
scored through the frozen decoder, and the run folder's figures and report.md.

- The samples' judge: a small CNN trained on the training images; the share of samples it classifies
  as the class they were drawn for, and the Frechet distance between samples and validation images in
  its feature space (the FID of Heusel et al. 2017, with this classifier in place of Inception).
- HyperHill on a trained tokenizer (Li et al., Multimedia Systems 2023, Tables 3, 5, 7; resize.py):
  block search, EXT and our vocabulary merge, each scored by PSNR and SSIM of the decoded images.
- report.md puts metrics.json in tables and words; `python evaluate.py RUN` writes it again.
"""
import argparse
import csv
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import resize
import tokenizer as tok
import vocabulary
import vq


class Classifier(nn.Module):
    """The samples' judge: two conv layers and a linear head on images in [0, 1]."""

    def __init__(self, channels, n_classes, height, width):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (height // 4) * (width // 4), 128), nn.ReLU())  # (B, 128)
        self.head = nn.Linear(128, n_classes)

    def forward(self, x):
        return self.head(self.features(x * 2 - 1))


def frechet_distance(a, b):
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), features (N, f) float64.
    The symmetric form needs only eigendecompositions (no general matrix square root)."""
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(w.clip(0))) @ v.T
    cross = np.sqrt(np.linalg.eigvalsh(root_a @ s_b @ root_a).clip(0)).sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross)


def judge_samples(data, images, labels, *, steps, seed, batch_size=64):
    """class_accuracy, frechet_distance and the judge's own classifier_accuracy on the validation
    images (None for unlabelled data); `data` has train_x, train_y, val_x, val_y (images in [0, 1]),
    n_classes and labelled."""
    if not getattr(data, "labelled", True):
        return dict(class_accuracy=None, frechet_distance=None, classifier_accuracy=None)
    torch.manual_seed(seed)
    x, y = data.train_x, data.train_y
    clf = Classifier(x.shape[1], data.n_classes, x.shape[2], x.shape[3]).to(x.device)
    opt = torch.optim.Adam(clf.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        b = torch.randint(len(x), (batch_size,), generator=g).to(x.device)
        loss = F.cross_entropy(clf(x[b]), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    clf.eval()
    with torch.no_grad():
        acc = lambda a, c: float((clf(a).argmax(1) == c).float().mean())  # noqa: E731
        real, fake = (clf.features(a * 2 - 1).double().cpu().numpy() for a in (data.val_x, images))
        return dict(class_accuracy=acc(images, labels), frechet_distance=frechet_distance(real, fake),
                    classifier_accuracy=acc(data.val_x, data.val_y))


def resize_tables(name, model, rule, data, *, seed, epochs, progress=None):
    """The search, extend and merge rows (metrics.json's `resize`) of one trained tokenizer: tokens of
    the training images build the index, the validation images' latents are quantized and decoded."""
    codebook = model.quantizer.codebook.detach()
    k = codebook.shape[0]
    tokens = tok.tokenize(model, data.train_x)[1]
    z_val, full = tok.tokenize(model, data.val_x)
    z = z_val.permute(0, 2, 3, 1).reshape(-1, z_val.shape[1])  # (N h w, d), image by image
    images = torch.arange(len(z_val), device=z.device).repeat_interleave(z.shape[0] // len(z_val))
    cooc, usage = resize.cooccurrence(tokens, k), vq.usage(tokens, k)

    def scored(new, index=None, **search):  # the block search of `index` (default: one block, the full search)
        index, seconds = index or resize.block_index(new, 1, method="hilbert"), math.inf
        for _ in range(3):  # the best of 3: the first call pays for warming up, and the CPU may be shared
            t0 = time.perf_counter()
            found = resize.block_search(z, new, index, images=images, rule=rule, **search)
            seconds = min(seconds, time.perf_counter() - t0)
        recon = tok.reconstruct(model, new[found.idx.reshape(full.shape)].permute(0, 3, 1, 2))
        return found, seconds, dict(psnr=tok.psnr(recon, data.val_x), ssim=tok.ssim(recon, data.val_x))

    _, t_full, base = scored(codebook)
    search = [dict(tokenizer=name, method="original", blocks=1, probes=1, exact=False, searched=1.0, time_ratio=1.0,
                   agreement=1.0, **base)]
    jobs = [(m, 8, 1, False) for m in ("kmeans", "lsh", "hilbert", "hyperhill")] + [("hyperhill", b, 1, False)
                                                                                   for b in (4, 6, 10)]
    jobs += [("hyperhill", 8, p, False) for p in (2, 3)] + [("hyperhill", 8, 1, True)]
    indices = {}
    for method, blocks, probes, exact in (progress or iter)(jobs):
        if (method, blocks) not in indices:
            indices[method, blocks] = resize.block_index(codebook, blocks, method=method, cooc=cooc, seed=seed,
                                                         epochs=epochs)
        found, seconds, q = scored(codebook, indices[method, blocks], probes=probes, exact=exact)
        search.append(dict(tokenizer=name, method=method, blocks=blocks, probes=probes, exact=exact,
                           searched=float(found.searched.mean()), time_ratio=seconds / t_full,
                           agreement=float((found.idx == full.reshape(-1)).float().mean()), **q))
    perm = indices["hyperhill", 8].perm
    extend = [dict(tokenizer=name, k=n, size=n * (k - 1) + 1,
                   **scored(resize.extend(codebook, n, perm=perm, rule=rule))[2])
              for n in (1, 2, 4, 8, 16)]
    merge = []  # for argmax z.e: merges that keep their members' norms (ours) against plain means
    jobs = [("hyperhill", rule), ("random", rule)] + ([("hyperhill", "distance")] if rule == "dot" else [])
    for method, merge_rule in jobs:
        for size in (k // 2, k // 4, k // 8):
            new = vocabulary.shrink_vocabulary(codebook, size, method=method, usage=usage, cooc=cooc, rule=merge_rule,
                                               seed=seed, epochs=epochs).codebook
            found, _, q = scored(new)
            label = method if method == "random" or rule == "distance" else \
                f"{method}, {'plain means' if merge_rule == 'distance' else 'norms kept'}"
            merge.append(dict(tokenizer=name, method=label, size=size, **q,
                              utilization=float((vq.usage(found.idx, size) > 0).double().mean())))
    return search, extend, merge


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)


def image_grid(path, rows):
    """rows: (N, C, H, W) arrays in [0, 1], one row of the figure each."""
    n = max(len(r) for r in rows)
    fig, axes = _pyplot().subplots(len(rows), n, figsize=(n * 0.8, len(rows) * 0.85), squeeze=False)
    for ax_row, r in zip(axes, rows):
        for j, ax in enumerate(ax_row):
            if j < len(r):
                ax.imshow(r[j, 0] if r.shape[1] == 1 else r[j].transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
            ax.set_axis_off()
    _save(fig, path)


def figure(path, panels):
    """panels: (title, xlabel, ylabel, {label: (xs, ys)}, log-x base or None), one subplot each."""
    fig, axes = _pyplot().subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (title, xlabel, ylabel, lines, base) in zip(axes[0], panels):
        for label, (xs, ys) in lines.items():
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, lw=1, label=label)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        if base:
            ax.set_xscale("log", base=base)
        if lines:
            ax.legend(fontsize=7)
    _save(fig, path)


LOG_FIELDS = ("stage", "step", "loss", "lr", "utilization", "val")


def read_log(path):
    """The rows of a run's log.csv (LOG_FIELDS, one training step a row); [] if there is none."""
    try:
        with open(path, newline="") as f:
            return [r for r in csv.DictReader(f) if set(r) == set(LOG_FIELDS)]
    except FileNotFoundError:
        return []
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None


def log_text(log, stage, rows):
    """log.csv's text with `stage`'s rows replaced by `rows` (dicts of the other fields)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, LOG_FIELDS)
    w.writeheader()
    w.writerows([r for r in log if r["stage"] != stage] + [dict(stage=stage, **r) for r in rows])
    return buf.getvalue()


def curves(log, stages):
    """{stage: (steps, the loss's running mean over 25 steps)} of the stages found in the log."""
    out = {}
    for stage in stages:
        loss = np.array([float(r["loss"]) for r in log if r["stage"] == stage])
        n = min(25, len(loss))
        if n:
            out[stage] = (np.arange(n, len(loss) + 1), np.convolve(loss, np.ones(n) / n, mode="valid"))
    return out


def series(rows, x, y, by):
    """{label: (xs, ys)} of dict rows grouped by the value of `by`."""
    return {g: ([r[x] for r in rows if r[by] == g], [r[y] for r in rows if r[by] == g])
            for g in dict.fromkeys(r[by] for r in rows)}


def figure_curves(path, log):
    figure(path, [(f"{title} (running mean of 25 steps)", "step", "loss", curves(log, stages), None)
                  for title, stages in
                  (("tokenizer loss", ("tokenizer", "compare_vq", "compare_vq_ema", "compare_ibq")),
                   ("AR cross-entropy", ("ar",)))])


def figure_usage(path, counts):
    """counts: {quantizer: uses of each code, most used first}."""
    figure(path, [("Codebook usage, same encoder, data and steps", "code (sorted by use)",
                   "tokens of the training images",
                   {k: (np.arange(1, len(c) + 1), np.maximum(c, 0.8)) for k, c in counts.items()}, 2)])


def figure_resize(path, search, extend):
    panels = [(f"{t} tokenizer: searched share against agreement", "share of the codebook searched",
               "agreement with the full search", series([r for r in search if r["tokenizer"] == t], "searched",
                                                        "agreement", "method"), None)
              for t in dict.fromkeys(r["tokenizer"] for r in search)]
    figure(path, panels + [("EXT (eq. 13): PSNR against codebook size", "codes", "validation PSNR (dB)",
                            series(extend, "size", "psnr", "tokenizer"), 2)])


def figure_scale(path, rows, log):
    """Utilization against step at the largest K (the paper's Fig. 2), utilization and PSNR against K."""
    largest = max(r["codebook_size"] for r in rows)
    window = [dict(name=r["stage"].split("_", 1)[1].rsplit("_", 1)[0], step=int(r["step"]),
                   utilization=float(r["utilization"]))
              for r in log
              if r["stage"].startswith("scale_") and r["stage"].endswith(f"_{largest}") and r["utilization"]]
    figure(path, [(f"K = {largest}: codes used by each 50 steps' tokens", "step", "utilization",
                   series(window, "step", "utilization", "name"), None),
                  ("utilization on all tokens", "K", "utilization",
                   series(rows, "codebook_size", "utilization", "name"), 2),
                  ("validation PSNR", "K", "PSNR (dB)", series(rows, "codebook_size", "psnr", "name"), 2)])


def table(rows, columns):
    """A markdown table of dict rows: floats with 3 decimals (PSNR with 2), None as n/a."""
    def cell(v, c):
        return "n/a" if v is None else f"{v:.2f}" if c == "psnr" else f"{v:.3f}" if isinstance(v, float) else str(v)
    return [f"| {' | '.join(columns)} |", "|" + " --- |" * len(columns)] + \
        [f"| {' | '.join(cell(r.get(c), c) for c in columns)} |" for r in rows] + [""]


def pct(v):
    return f"{100 * v:.1f} %"


def tokenizer_section(t, c):
    lines = ["## Tokenizer", "", f"The {t['quantizer'].upper()} tokenizer (K = {t['codebook_size']}) reconstructs the "
             f"validation images at {t['psnr']:.2f} dB (SSIM {t['ssim']:.3f}) and uses {pct(t['utilization'])} of its "
             "codes on the training images.", ""] + table([t], ["quantizer", "codebook_size", "psnr", "ssim",
                                                              "utilization", "perplexity"])
    if c:
        lines += ["## VQ against IBQ", "", "Same encoder, data, steps and K: " + ", ".join(
            f"{q} uses {pct(v['utilization'])} of its codes at {v['psnr']:.2f} dB" for q, v in c.items()) + ". "
            "beta is on the commitment term for VQ (VQ-VAE's convention) and on the codebook term for IBQ (the "
            "public IBQ code's, like taming's legacy=True).", ""]
        lines += table([{**v, "quantizer": q} for q, v in c.items()],
                       ["quantizer", "utilization", "perplexity", "psnr", "ssim"])
    return lines


def samples_section(s, ar):
    return ["## Generator", "", "Samples are judged by a classifier trained here on the training images (its accuracy "
            "on the validation images beside): the share classified as the class they were drawn for, and the Fréchet "
            "distance to the validation images in its feature space.", ""] + \
        table([{**ar, **s}], ["val_loss", "class_accuracy", "frechet_distance", "classifier_accuracy"])


def resize_section(r):
    lines = ["## Resizing the codebook (HyperHill)", "", "The paper's smaller codebook is a smaller search (its Tables "
             "3 and 5): each image is quantized by exact search among the blocks its latents pick, with the same "
             "vocabulary and decoder. `searched` is the share of the codebook searched, `time_ratio` the time against "
             "the full search, `agreement` the share of tokens equal to the full search's (which the paper does not "
             "report); probes > 1 and exact are ours.", ""]
    lines += table(r["search"], ["tokenizer", "method", "blocks", "probes", "exact", "searched", "time_ratio",
                                 "agreement", "psnr", "ssim"])
    for name in dict.fromkeys(row["tokenizer"] for row in r["search"]):
        rows = [row for row in r["search"] if row["tokenizer"] == name]
        at8 = {row["method"]: row for row in rows if row["blocks"] == 8 and row["probes"] == 1 and not row["exact"]}
        least = min(at8, key=lambda m: at8[m]["searched"])
        hh, hb = at8["hyperhill"], at8["hilbert"]
        lines += [f"On the {name} tokenizer at B = 8, {least} searches the least ({pct(at8[least]['searched'])}; the "
                  f"paper: HyperHill, 52-60 %). HyperHill searches {pct(hh['searched'])} at {hh['psnr']:.2f} dB "
                  f"against {rows[0]['psnr']:.2f} dB for the full search, with {pct(hh['agreement'])} of the tokens "
                  f"unchanged; without the hyperbolic part (hilbert) it searches {pct(hb['searched'])}: the paper's "
                  f"claim that the hyperbolic part lowers the share "
                  f"{'holds' if hh['searched'] < hb['searched'] else 'does not hold'} here.", ""]
    lines += ["The paper's larger codebook (EXT, Table 7): k - 1 evenly spaced codes between neighbours along the "
              "HyperHill order (the paper: +0.1 to +0.2 dB). Under IBQ's rule (argmax z.e) a point on a segment never "
              "wins, so the dot-product tokenizer gets our spherical variant with interpolated norms.", ""]
    lines += table(r["extend"], ["tokenizer", "k", "size", "psnr", "ssim"])
    lines += ["Ours, not the paper's: merging runs of neighbours into a smaller vocabulary (old ids mapped to new), "
              "against a random subset of the codes.", ""] + table(r["merge"], ["tokenizer", "method", "size", "psnr",
                                                                                "ssim", "utilization"])
    return lines


def scale_section(rows):
    lines = ["## The IBQ claim at scale", "", "Each quantizer trained at each K with the same steps and batch; "
             "utilization and perplexity of all 5000 images' tokens, PSNR on the validation images. The paper "
             "(SEED-Voken's tokenizers): IBQ uses 99 / 98 / 96 / 84 % of K = 1024 / 8192 / 16384 / 262144 codes while "
             "VQ's usage falls.", ""]
    lines += table(rows, ["name", "codebook_size", "utilization", "perplexity", "psnr", "ssim", "seconds"])
    for name in dict.fromkeys(r["name"] for r in rows):
        mine = [r for r in rows if r["name"] == name]
        lines += [f"{name}: utilization " + " / ".join(pct(r["utilization"]) for r in mine) + ", PSNR "
                  + " / ".join(f"{r['psnr']:.2f}" for r in mine) + " dB at K = "
                  + " / ".join(str(r["codebook_size"]) for r in mine) + "."]
    return lines + [""]


def write(out, header):
    """report.md of the run folder `out` from its metrics.json, `header` lines first."""
    path = Path(out) / "metrics.json"
    m = json.loads(path.read_text()) if path.is_file() else {}
    lines = [f"# Run report: {out}", "", *header, ""]
    if "tokenizer" in m:
        lines += tokenizer_section(m["tokenizer"], m.get("compare"))
    if "samples" in m:
        lines += samples_section(m["samples"], m.get("ar", {}))
    if "resize" in m:
        lines += resize_section(m["resize"])
    if "scale" in m:
        lines += scale_section(m["scale"])
    lines += [f"![{p.stem}]({p.name})" for p in sorted(Path(out).glob("*.png"))]
    (Path(out) / "report.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="a run folder of train_ar.py")
    write(p.parse_args().run, ["(written again from metrics.json)"])
