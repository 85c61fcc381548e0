"""Gradients of a loss through a model, from the hand-derived VJPs alone."""

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from fnnet._intern import interned
from fnnet.layers import Layer, contract_hint
from fnnet.losses import Loss

__all__ = ["value_and_grad", "as_jax"]


def layout(model: Layer, x, minibatches: bool = False) -> Optional[Layer]:
    """The one place fnnet picks a layout: the model's feature-major twin for a 2-D
    batch `x` trained whole (run on `x.T`), or None to run `model` on x as it is.

    Minibatches stay batch-major: on small batches both layouts run alike, and
    a feature-major gather per batch costs more than it saves. A twin that
    disagrees with its layer about state (one has `update_state`, the other
    not) is not used.
    """
    twin = model.feature_major
    if minibatches or jnp.ndim(x) != 2 or twin is None:
        return None
    return twin if (twin.update_state is None) == (model.update_state is None) else None


def check_input(model: Layer, params, x) -> None:
    """Check a batch x as the user passed it, before `layout` may transpose it: not
    empty, and `model.apply` traced (not run) on it, so shape errors speak of the
    user's shapes."""
    if jnp.size(x) == 0:
        raise ValueError(
            f"an empty batch: x of shape {jnp.shape(x)} holds no values, and the "
            f"mean loss over no samples is undefined"
        )
    jax.eval_shape(model.apply, params, x)


def loss_and_grads(model: Layer, loss: Loss, params, x, target, *, train: bool = True, key=None):
    """The loss value and d loss / d params, for one batch.

    Runs in the layout `layout` picks; the results are the same either way.
    """
    check_input(model, params, x)
    twin = layout(model, x)
    if twin is None:
        return loss_and_grads_in(model, loss, params, x, target, train=train, key=key)
    return loss_and_grads_in(twin, loss, params, x.T, target, train=train, key=key, transposed=True)


def loss_and_grads_in(
    layer: Layer, loss: Loss, params, x, target, *, train: bool, key, transposed: bool = False
):
    """`loss_and_grads` for x already in `layer`'s layout: `x.T` when `transposed` (a
    feature-major twin on `(features, batch)`). A training loop transposes once, before
    the loop, and calls this: XLA does not hoist the transpose out of the loop itself."""

    def user(a):  # the twin's (outputs, batch) <-> the loss's (batch, outputs)
        return a.T if transposed else a

    with contract_hint():
        y = user(layer.apply(params, x, train=train, key=key))
        dparams, _ = layer.vjp(params, x, user(loss.grad(y, target)), train=train, key=key)
    return loss.value(y, target), dparams


@interned
def value_and_grad(model: Layer, loss: Loss, *, train: bool = True) -> Callable:
    """Build `f(params, x, target, key=None) -> (value, grads)`; jittable and vmappable.

    Args:
      model: a Layer (e.g. a `serial`).
      loss: a Loss (e.g. `LossBCE()`).
      train: run the model in training mode (the default: these are the
        gradients a training step uses; `Dropout` then needs `key`, and
        `BatchNorm` uses the batch's statistics). False: inference mode.

    Returns:
      `f` with `x: (batch, n_in)`, `target` shaped like the model's output
      (integer labels `(batch,)` for `LossCrossEntropy`), `key` a PRNG key for
      stochastic layers; `value` a scalar, `grads` with the structure of
      `params`. In training mode the grads under `State` are zero (running
      statistics are not used); in inference they are the true derivatives.
      fnnet's optimizers never apply them; with another optimizer, mask them
      with `fnnet.state.trainable_mask(params)`.

    Example:
      >>> value, grads = jax.jit(value_and_grad(model, LossBCE()))(params, x, y)
    """

    def f(params, x, target, key=None):
        return loss_and_grads(model, loss, params, x, target, train=train, key=key)

    return f


@interned
def as_jax(model: Layer, *, train: bool = False) -> Callable:
    """`f(params, x) = model.apply(params, x)` whose JAX derivative is the hand VJP.

    `f` is a `jax.custom_vjp` function, so JAX's reverse-mode autodiff (grad,
    vjp), jit, vmap and optimizers written for JAX work on fnnet models while
    using fnnet's hand-derived backward pass. Forward mode (jvp) is not defined.
    With `train=True` it is `f(params, x, key) = model.apply(params, x, train=True, key=key)`
    (running statistics are then yours to move, with `model.update_state`).

    Example:
      >>> f = as_jax(model)
      >>> loss = lambda p: jnp.mean(f(p, x) ** 2)
      >>> # JAX's grad of `loss` now runs model.vjp for the model's part
    """
    if train:

        @jax.custom_vjp
        def f_train(params, x, key):
            return model.apply(params, x, train=True, key=key)

        def forward_train(params, x, key):
            return f_train(params, x, key), (params, x, key)

        def backward_train(residuals, dy):
            params, x, key = residuals
            return (*model.vjp(params, x, dy, train=True, key=key), None)  # no cotangent for key

        f_train.defvjp(forward_train, backward_train)
        return f_train

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
