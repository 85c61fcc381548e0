"""scikit-learn's MLP objectives on fnnet: its losses, its subset accuracy, and its SGD and
Adam update rules (with the L2 penalty on the weights alone) as fnnet optimizers.

scikit-learn's losses are a mean over samples of a sum over outputs (its log loss on
several labels, its half squared error's gradient); fnnet's built-in losses are a mean
over elements. `SummedOverOutputs` scales one into the other. Its optimizers keep the
learning rate inside the velocity (`v <- momentum v - lr g`), which differs from fnnet's
SGD once the rate changes (`invscaling`, `adaptive`), and its Adam adds eps outside the
bias correction: both are written here as per-leaf rules for `fnnet.optimizer`, every
number a hyperparameter (data: a second fit with other numbers compiles nothing).
"""

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from fnnet.losses import Loss
from fnnet.metrics import Metric
from fnnet.optim import Hyperparameter, fraction, nonnegative, optimizer, positive

__all__ = ["SummedOverOutputs", "HalfPoissonLogLink", "SubsetAccuracy", "sklearn_sgd", "sklearn_adam"]


@dataclasses.dataclass(frozen=True, repr=False)
class SummedOverOutputs(Loss):
    """`scale` times `base`'s mean over elements times the number of outputs: a mean over
    samples of `scale` times the sum over outputs (scikit-learn's log loss on several
    labels: `SummedOverOutputs(LossBCEWithLogits())`; its half squared error:
    `SummedOverOutputs(LossMSE(), 0.5)`).

    Args:
      base: a loss that is a mean over elements of `(batch, outputs)` predictions.
      scale: a float > 0.
    """

    base: Loss
    scale: float = 1.0
    per_sample: ClassVar[bool] = True

    def value(self, y, target):
        return self.base.value(y, target) * (jnp.shape(y)[-1] * self.scale)

    def grad(self, y, target):
        return self.base.grad(y, target) * (jnp.shape(y)[-1] * self.scale)

    def check_targets(self, target, n_outputs):  # type: ignore[override]
        if self.base.check_targets is not None:
            self.base.check_targets(target, n_outputs)


def _correct_rows(y, target):
    return jnp.all((y > 0) == (target > 0.5), axis=-1)  # logits against 0/1 labels


@dataclasses.dataclass(frozen=True, repr=False)
class SubsetAccuracy(Metric):
    """The fraction of samples whose every label is right (scikit-learn's `accuracy_score`
    on several labels): logits `(batch, labels)` > 0 against 0/1 targets."""

    name: ClassVar[str] = "subset_accuracy"

    def sums(self, y, target, weights):
        w = jnp.asarray(weights, jnp.promote_types(jnp.result_type(float), jnp.float32))
        return {"correct": jnp.sum(w * _correct_rows(y, target)), "count": jnp.sum(w)}

    def value(self, sums):
        return sums["correct"] / sums["count"]


def _penalized(p, g, h):
    """g plus the L2 term's gradient on a weight matrix (`l2` = alpha / batch samples);
    intercepts and BatchNorm's 1-D leaves are not penalized."""
    return g + h["l2"] * p if p.ndim >= 2 else g


def _scaled_lr(lr, h, t):
    """scikit-learn's `invscaling`: lr / (samples seen before this epoch + 1) ** power_t,
    constant through an epoch (power_t 0: a constant rate)."""
    epochs_done = jnp.floor(t.astype(lr.dtype) / h["steps_per_epoch"])
    return lr / (epochs_done * h["n_samples"] + 1) ** h["power_t"]


def _sgd_rule(p, g, slots, h, lr, t):
    g = _penalized(p, g, h)
    lr = _scaled_lr(lr, h, t)
    velocity = h["momentum"] * slots["velocity"] - lr * g  # v <- momentum v - lr g
    nesterov = h["momentum"] * velocity - lr * g  # Nesterov: p + momentum v - lr g
    return p + jnp.where(h["nesterov"] > 0, nesterov, velocity), {"velocity": velocity}


def _adam_rule(p, g, slots, h, lr, t):
    g = _penalized(p, g, h)
    m = h["beta_1"] * slots["m"] + (1 - h["beta_1"]) * g
    v = h["beta_2"] * slots["v"] + (1 - h["beta_2"]) * g * g
    step = t + 1
    lr = lr * jnp.sqrt(1 - h["beta_2"] ** step) / (1 - h["beta_1"] ** step)
    return p - lr * m / (jnp.sqrt(v) + h["epsilon"]), {"m": m, "v": v}


def _closed_fraction(v):
    return (v >= 0) & (v <= 1)


def _flag(v):
    return (v == 0) | (v == 1)


def _positive_count(v):
    return v >= 1


def sklearn_sgd(lr, *, momentum, nesterov, power_t, l2, steps_per_epoch, n_samples):
    """scikit-learn's SGD (`SGDOptimizer`) with its `invscaling` rate and the L2 term.

    Args:
      lr: learning_rate_init, > 0.
      momentum: in [0, 1]; nesterov: True or False.
      power_t: >= 0, 0 for a constant rate (`invscaling` otherwise).
      l2: alpha over the samples of a batch, >= 0.
      steps_per_epoch, n_samples: the batches and samples of an epoch (`invscaling`
        counts samples seen at the end of each epoch).
    """
    return optimizer(
        "sklearn_sgd",
        _sgd_rule,
        lr,
        ["velocity"],
        momentum=Hyperparameter(momentum, _closed_fraction, "in [0, 1]"),
        nesterov=Hyperparameter(float(nesterov), _flag, "0 or 1"),
        power_t=nonnegative(power_t),
        l2=nonnegative(l2),
        steps_per_epoch=Hyperparameter(steps_per_epoch, _positive_count, ">= 1"),
        n_samples=Hyperparameter(n_samples, _positive_count, ">= 1"),
    )


def sklearn_adam(lr, *, beta_1, beta_2, epsilon, l2):
    """scikit-learn's Adam (`AdamOptimizer`): lr_t = lr sqrt(1 - beta_2**t) / (1 - beta_1**t),
    p <- p - lr_t m / (sqrt(v) + epsilon), with the L2 term `l2` (alpha over a batch's
    samples) in the gradient of the weights."""
    return optimizer(
        "sklearn_adam",
        _adam_rule,
        lr,
        ["m", "v"],
        beta_1=fraction(beta_1),
        beta_2=fraction(beta_2),
        epsilon=positive(epsilon),
        l2=nonnegative(l2),
    )


@dataclasses.dataclass(frozen=True, repr=False)
class HalfPoissonLogLink(Loss):
    """scikit-learn's half Poisson deviance on log predictions z (its `exp` output):
    the mean over samples of sum over outputs of exp(z) - y z + (y log y - y)."""

    per_sample: ClassVar[bool] = True

    def value(self, z, target):
        y = jnp.asarray(target, z.dtype)
        constant = jnp.where(y > 0, y * jnp.log(jnp.where(y > 0, y, 1)), 0) - y
        return jnp.sum(jnp.exp(z) - y * z + constant) / jnp.shape(z)[0]

    def grad(self, z, target):
        return (jnp.exp(z) - jnp.asarray(target, z.dtype)) / jnp.shape(z)[0]  # d/dz = exp(z) - y

    def check_targets(self, target, n_outputs):  # type: ignore[override]
        if target.size and target.min() < 0:
            raise ValueError(f"HalfPoissonLogLink: targets must be >= 0, got a minimum of {target.min()}")
