"""Figures for scripts/disk.py and scripts/sweep.py (needs matplotlib)."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fnnet.data import DISK_CENTRE, DISK_RADIUS


def plot_disk(results, models, losses, folder, grid=200, seed=0):
    """Write figure1.png (each model's output over [0,1]^2, one seed) and curves.png; return the paths.

    Args:
      results: name -> {"params": leaves `(seeds, ...)`, "test_acc": `(seeds,)` in %,
        "curves": {"epoch": `(evaluations,)`, "train_loss", "test_loss",
        "train_acc", "test_acc": `(evaluations, seeds)`}}, as `disk.main` returns.
      models: name -> (model, ...), as `disk.MODELS`.
      losses: name -> what its loss is, for the curves' axes, as `disk.LOSSES`.
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
    curves = os.path.join(folder, "curves.png")
    _plot_curves(results, losses, curves)
    return [figure1, curves]


def _plot_curves(results, losses, path):
    """One column per model: its own loss on top (the losses are not comparable), accuracy
    below on one shared scale; the mean over seeds as lines, the seeds' range as a band."""
    names = list(results)
    fig, axes = plt.subplots(
        2, len(names), figsize=(3.6 * len(names), 6.4), squeeze=False, sharex=True, layout="constrained"
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    low = 100.0  # the accuracy scale's bottom: the lowest mean after the first tenth of training
    for (loss_ax, acc_ax), name, colour in zip(axes.T, names, colours):
        c = results[name]["curves"]
        for split, style in (("train", "-"), ("test", "--")):
            for ax, values in ((loss_ax, c[f"{split}_loss"]), (acc_ax, 100 * c[f"{split}_acc"])):
                ax.plot(c["epoch"], values.mean(axis=1), style, color=colour, label=split)
                ax.fill_between(c["epoch"], values.min(axis=1), values.max(axis=1), color=colour, alpha=0.15)
            low = min(low, float(np.min(100 * c[f"{split}_acc"].mean(axis=1)[len(c["epoch"]) // 10 :])))
        loss_ax.set(title=name, ylabel=f"loss: {losses[name]}", yscale="log")
        acc_ax.set(xlabel="epoch", ylabel="accuracy %")
    for ax in axes[1]:
        ax.set_ylim(max(0.0, np.floor(low) - 1), 100.3)  # 100% in full view
    seeds = c["test_acc"].shape[1]
    axes[0, 0].legend(title=f"mean and range over {seeds} seed(s)", fontsize=8, loc="upper right")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_heatmap(cells, lrs, decays, path, title):
    """Write a heatmap per model, lr by decay: colour the mean test error on one log scale,
    text the mean and std of the test accuracy over seeds; the best cell boxed.

    Args:
      cells: name -> (mean, std) of the test accuracy in %, each `(len(lrs), len(decays))`.
      lrs, decays: the grid's values, for the tick labels.
      path: the PNG to write; returned.
      title: the figure's title.
    """
    errors = np.concatenate([np.ravel(100 - mean) for mean, _ in cells.values()])
    positive = errors[np.isfinite(errors) & (errors > 0)]
    # one decade up from the best cell (at most to 100%): the differences inside the plateau show
    low = float(positive.min()) if positive.size else 0.1
    high = max(min(10 * low, 100.0), 1.01 * low)
    norm = matplotlib.colors.LogNorm(vmin=low, vmax=high, clip=True)
    cmap = plt.get_cmap("viridis_r")
    fig, axes = plt.subplots(
        1, len(cells), figsize=(3 * len(cells) + 1.5, 4.4), squeeze=False, layout="constrained"
    )
    for ax, (name, (mean, std)) in zip(axes[0], cells.items()):
        error = np.maximum(100 - mean, low)
        image = ax.imshow(error, cmap=cmap, norm=norm)
        ax.set_xticks(range(len(decays)), [str(d) for d in decays])
        ax.set_yticks(range(len(lrs)), [str(lr) for lr in lrs])
        ax.set(xlabel="decay", ylabel="lr", title=name)
        for i in range(len(lrs)):
            for j in range(len(decays)):
                colour = _text_colour(cmap(norm(error[i, j])))
                ax.text(
                    j,
                    i,
                    f"{mean[i, j]:.2f}\n±{std[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color=colour,
                )
        i, j = np.unravel_index(np.nanargmax(mean), mean.shape)
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
    bar = fig.colorbar(
        image,
        ax=axes[0].tolist(),
        extend="max" if np.nanmax(errors) > high else "neither",
        label="mean test error %, log scale (100 - accuracy)",
    )
    bar.set_ticks([t for t in (0.1, 0.2, 0.5, 1, 2, 3, 5, 10, 20, 30, 50, 100) if low <= t <= high])
    bar.ax.minorticks_off()
    bar.ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
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
