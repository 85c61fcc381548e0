"""Figures for scripts/disk.py and scripts/sweep.py (needs matplotlib)."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fnnet.data import DISK_CENTRE, DISK_RADIUS


def plot_disk(results, models, folder, grid=200):
    """Write figure1.png (model output over [0,1]^2, seed 0) and curves.png; return the paths."""
    os.makedirs(folder, exist_ok=True)
    u = (np.arange(grid) + 0.5) / grid
    points = np.stack(np.meshgrid(u, u), axis=-1).reshape(-1, 2).astype(np.float32)
    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        model = models[name][0]
        params = _member(results[name]["params"], 0)
        out = np.asarray(model.apply(params, points))
        value = out[:, -1] if out.shape[1] == 1 else out[:, 1] - out[:, 0]
        image = ax.imshow(value.reshape(grid, grid), origin="lower", extent=(0, 1, 0, 1), cmap="viridis")
        ax.add_patch(plt.Circle(DISK_CENTRE, DISK_RADIUS, fill=False, color="white", lw=1.5))
        ax.set_title(f"{name}: test acc {results[name]['test_acc'][0]:.1f}%")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    figure1 = os.path.join(folder, "figure1.png")
    fig.savefig(figure1, dpi=100)
    plt.close(fig)

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for name in names:
        c = results[name]["curves"]
        for split, style in (("train", "-"), ("test", "--")):
            loss_ax.plot(c["epoch"], c[f"{split}_loss"].mean(axis=1), style, label=f"{name} {split}")
            acc_ax.plot(c["epoch"], 100 * c[f"{split}_acc"].mean(axis=1), style, label=f"{name} {split}")
    loss_ax.set(xlabel="epoch", ylabel="loss (mean over seeds)", yscale="log")
    acc_ax.set(xlabel="epoch", ylabel="accuracy % (mean over seeds)", ylim=(80, 100))
    acc_ax.legend(fontsize=7)
    fig.tight_layout()
    curves = os.path.join(folder, "curves.png")
    fig.savefig(curves, dpi=100)
    plt.close(fig)
    return [figure1, curves]


def plot_heatmap(table, lrs, decays, path, title):
    """A grid of mean test accuracies, lr by decay, annotated."""
    fig, axes = plt.subplots(1, len(table), figsize=(5 * len(table), 4), squeeze=False)
    for ax, (name, acc) in zip(axes[0], table.items()):
        image = ax.imshow(acc, cmap="viridis", vmin=max(50, np.nanmin(acc)), vmax=100)
        ax.set_xticks(range(len(decays)), [str(d) for d in decays])
        ax.set_yticks(range(len(lrs)), [str(lr) for lr in lrs])
        ax.set(xlabel="decay", ylabel="lr", title=name)
        for i in range(len(lrs)):
            for j in range(len(decays)):
                ax.text(j, i, f"{acc[i, j]:.1f}", ha="center", va="center", color="w", fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _member(tree, i):
    import jax
    return jax.tree.map(lambda a: a[i], tree)
