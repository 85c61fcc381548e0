"""Figures for scripts/disk.py and scripts/sweep.py (needs matplotlib)."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from fnnet.data import DISK_CENTRE, DISK_RADIUS


def plot_disk(results, models, folder, grid=200, seed=0):
    """Write figure1.png (each model's output over [0,1]^2, one seed) and curves.png; return the paths.

    Args:
      results: name -> {"params": leaves `(seeds, ...)`, "test_acc": `(seeds,)` in %,
        "curves": {"epoch": `(evaluations,)`, "train_loss", "test_loss",
        "train_acc", "test_acc": `(evaluations, seeds)`}}, as `disk.main` returns.
      models: name -> (model, ...), as `disk.MODELS`.
      folder: where to write; made if missing.
      grid: Figure 1's resolution, points per side.
      seed: whose params Figure 1 shows.
    """
    os.makedirs(folder, exist_ok=True)
    u = (np.arange(grid) + 0.5) / grid
    points = np.stack(np.meshgrid(u, u), axis=-1).reshape(-1, 2).astype(np.float32)
    names = list(results)
    fig, axes = plt.subplots(
        1, len(names), figsize=(4.2 * len(names), 4), squeeze=False, layout="constrained"
    )
    for ax, name in zip(axes[0], names):
        params = _member(results[name]["params"], seed)
        out = np.asarray(models[name][0].apply(params, points))
        value, label = (
            (out[:, 0], "model output")
            if out.shape[1] == 1
            else (out[:, 1] - out[:, 0], "model output: class 1 - class 0")
        )
        image = ax.imshow(value.reshape(grid, grid), origin="lower", extent=(0, 1, 0, 1), cmap="viridis")
        ax.add_patch(plt.Circle(DISK_CENTRE, DISK_RADIUS, fill=False, color="white", lw=1.5))
        ax.set(
            xlabel="x1",
            ylabel="x2",
            title=f"{name}, seed {seed}: test acc {results[name]['test_acc'][seed]:.1f}%",
        )
        fig.colorbar(image, ax=ax, fraction=0.046, label=label)
    figure1 = os.path.join(folder, "figure1.png")
    fig.savefig(figure1, dpi=100)
    plt.close(fig)

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    handles = []
    for name, colour in zip(names, plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        c = results[name]["curves"]
        for split, style in (("train", "-"), ("test", "--")):
            loss_ax.plot(c["epoch"], c[f"{split}_loss"].mean(axis=1), style, color=colour)
            acc_ax.plot(c["epoch"], 100 * c[f"{split}_acc"].mean(axis=1), style, color=colour)
        handles.append(Line2D([], [], color=colour, label=name))
    handles += [
        Line2D([], [], color="k", ls="-", label="train"),
        Line2D([], [], color="k", ls="--", label="test"),
    ]
    loss_ax.set(xlabel="epoch", ylabel="loss (mean over seeds)", yscale="log")
    acc_ax.set(xlabel="epoch", ylabel="accuracy % (mean over seeds)", ylim=(80, 100))
    acc_ax.legend(handles=handles, fontsize=8, loc="lower right")
    curves = os.path.join(folder, "curves.png")
    fig.savefig(curves, dpi=100)
    plt.close(fig)
    return [figure1, curves]


def plot_heatmap(table, lrs, decays, path, title):
    """Write a heatmap of mean test accuracy (%) per model, lr by decay, on one colour scale.

    Args:
      table: name -> accuracies `(len(lrs), len(decays))` in %.
      lrs, decays: the grid's values, for the tick labels.
      path: the PNG to write; returned.
      title: the figure's title.
    """
    values = np.concatenate([np.ravel(acc) for acc in table.values()])
    low = max(50.0, float(np.nanmin(values))) if np.any(np.isfinite(values)) else 50.0
    norm = matplotlib.colors.Normalize(vmin=min(low, 99.0), vmax=100)
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(
        1, len(table), figsize=(3 * len(table) + 1.5, 4.2), squeeze=False, layout="constrained"
    )
    for ax, (name, acc) in zip(axes[0], table.items()):
        image = ax.imshow(acc, cmap=cmap, norm=norm)
        ax.set_xticks(range(len(decays)), [str(d) for d in decays])
        ax.set_yticks(range(len(lrs)), [str(lr) for lr in lrs])
        ax.set(xlabel="decay", ylabel="lr", title=name)
        for i in range(len(lrs)):
            for j in range(len(decays)):
                ax.text(
                    j,
                    i,
                    f"{acc[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color=_text_colour(cmap(norm(acc[i, j]))),
                )
    fig.colorbar(image, ax=axes[0].tolist(), label="mean test accuracy %")
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _text_colour(rgba):
    """Black on a light cell, white on a dark one (the cell's relative luminance)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.4 else "white"


def _member(tree, i):
    import jax

    return jax.tree.map(lambda a: a[i], tree)
