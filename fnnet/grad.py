"""Gradients of a loss through a model, from the hand-derived VJPs alone."""

from typing import Callable

import jax
import jax.numpy as jnp

from fnnet._shared import shared
from fnnet.layers import Layer, feature_major
from fnnet.losses import Loss

__all__ = ["value_and_grad", "as_jax"]


def loss_and_grads(model: Layer, loss: Loss, params, x, target):
    """The loss value and d loss / d params, for one batch.

    With a 2-D `x` and a model that has a feature-major twin, the forward and
    backward passes run on `x.T` (features, batch), which XLA's CPU backend
    multiplies about twice as fast; the results are the same.
    """
    if jnp.size(x) == 0:
        raise ValueError(f"an empty batch: x of shape {jnp.shape(x)} holds no values, and the "
                         f"mean loss over no samples is undefined")
    twin = feature_major(model)
    if twin is not None and x.ndim == 2:
        return loss_and_grads_fm(twin, loss, params, x.T, target)
    y = model.apply(params, x)
    dparams, _ = model.vjp(params, x, loss.grad(y, target))
    return loss.value(y, target), dparams


def loss_and_grads_fm(twin: Layer, loss: Loss, params, x_fm, target):
    """`loss_and_grads` for a feature-major twin and `x_fm` of shape (features, batch).

    A training loop over one full batch transposes x once, before the loop,
    and calls this: XLA does not hoist the transpose out of the loop itself.
    """
    y = twin.apply(params, x_fm).T
    dparams, _ = twin.vjp(params, x_fm, loss.grad(y, target).T)
    return loss.value(y, target), dparams


@shared
def value_and_grad(model: Layer, loss: Loss) -> Callable:
    """Build `f(params, x, target) -> (value, grads)`; jittable and vmappable.

    Args:
      model: a Layer (e.g. a `serial`).
      loss: a Loss (e.g. `LossBCE()`).

    Returns:
      `f` with `x: (batch, n_in)`, `target` shaped like the model's output
      (integer labels `(batch,)` for `LossCrossEntropy`); `value` a scalar,
      `grads` with the structure of `params`.

    Example:
      >>> value, grads = jax.jit(value_and_grad(model, LossBCE()))(params, x, y)
    """
    def f(params, x, target):
        return loss_and_grads(model, loss, params, x, target)
    return f


@shared
def as_jax(model: Layer) -> Callable:
    """`f(params, x) = model.apply(params, x)` whose JAX derivative is the hand VJP.

    `f` is a `jax.custom_vjp` function, so JAX's reverse-mode autodiff (grad,
    vjp), jit, vmap and optimizers written for JAX work on fnnet models while
    using fnnet's hand-derived backward pass. Forward mode (jvp) is not defined.

    Example:
      >>> f = as_jax(model)
      >>> loss = lambda p: jnp.mean(f(p, x) ** 2)
      >>> # JAX's grad of `loss` now runs model.vjp for the model's part
    """
    @jax.custom_vjp
    def f(params, x):
        return model.apply(params, x)

    def forward(params, x):
        return model.apply(params, x), (params, x)

    def backward(residuals, dy):
        params, x = residuals
        return model.vjp(params, x, dy)

    f.defvjp(forward, backward)
    return f
