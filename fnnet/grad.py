"""Gradients of a loss through a model, from the hand-derived VJPs alone."""

import dataclasses
import functools

import jax
import jax.numpy as jnp

from fnnet._checks import as_array, describe
from fnnet._layout import feature_major
from fnnet._setup import check_kinds, traced_apply
from fnnet._precision import wide
from fnnet.layers import Layer, check_dparams, check_train, contract_hint, masked
from fnnet.losses import Loss

__all__ = ["value_and_grad", "as_jax"]


def check_input(model: Layer, params, x) -> None:
    """Check a batch x as the user passed it, before a layout may transpose it: not
    empty, and `model.apply` traced (not run) on it, so shape errors speak of the
    user's shapes."""
    if jnp.size(x) == 0:
        raise ValueError(
            f"an empty batch: x of shape {jnp.shape(x)} holds no values, and the "
            f"mean loss over no samples is undefined"
        )
    traced_apply.eval_shape(model, params, x)  # once per model structure and shapes


def loss_and_grads(model: Layer, loss: Loss, params, x, target, *, train: bool = True, key=None):
    """The loss value and d loss / d params, for one batch.

    Runs in the layout `fnnet._layout` picks; the results are the same either way.
    """
    check_input(model, params, x)
    twin = feature_major(model, x)
    if twin is None:
        return loss_and_grads_in(model, loss, params, x, target, train=train, key=key)
    return loss_and_grads_in(twin, loss, params, x.T, target, train=train, key=key, transposed=True)


def shared_loss(loss: Loss, y, target, share):
    """`(value, dy)`: the loss's value and gradient in y, each sample counted by its `share`.

    `share` is None (the loss as it is: a mean over the batch) or `(batch,)`, each
    sample's share of the value: weights over their sum, 0 for padding. Every fnnet loss
    is a mean over samples, so it is taken per sample (on a batch of one, `jax.vmap`) and
    summed by shares: a loss of your own needs nothing more.
    """
    if share is None:
        return loss.value(y, target), loss.grad(y, target)

    def per_sample(f):
        return jax.vmap(lambda y1, t1: f(y1[None], t1[None]))(y, target)

    values, grads = per_sample(loss.value), per_sample(loss.grad)[:, 0]
    wide_share = wide(share)
    value = jnp.sum(wide_share * wide(values)).astype(values.dtype)
    dy = (wide_share.reshape((-1,) + (1,) * (grads.ndim - 1)) * wide(grads)).astype(grads.dtype)
    return value, dy


def loss_and_grads_in(
    layer: Layer,
    loss: Loss,
    params,
    x,
    target,
    *,
    train: bool,
    key,
    transposed: bool = False,
    share=None,
):
    """`loss_and_grads` for x already in `layer`'s layout: `x.T` when `transposed` (a
    feature-major twin on `(features, batch)`). A training loop transposes once, before
    the loop, and calls this: XLA does not hoist the transpose out of the loop itself.
    `share` (`shared_loss`) weighs the samples; where it is 0 (padding) a layer that
    mixes samples (`uses_mask`) leaves them out of its statistics."""

    def user(a):  # the twin's (outputs, batch) <-> the loss's (batch, outputs)
        return a.T if transposed else a

    mode = dict(train=train, key=key, **masked(layer, None if share is None else share > 0))
    with contract_hint():
        y = user(layer.apply(params, x, **mode))
        value, dy = shared_loss(loss, y, target, share)
        dparams, _ = layer.vjp(params, x, user(dy), **mode)
    check_dparams("the model", params, dparams)  # a Sequential names its layer itself
    return value, dparams


@dataclasses.dataclass(frozen=True)
class ValueAndGrad:
    """`f(params, x, target, *, key=None) -> (value, grads)`, made by `value_and_grad`: a
    value: equal models and losses make equal functions."""

    model: Layer
    loss: Loss
    train: bool = True

    def __call__(self, params, x, target, *, key=None):
        x, target = (
            jnp.asarray(as_array("value_and_grad", name, a)) for name, a in (("x", x), ("target", target))
        )
        return loss_and_grads(self.model, self.loss, params, x, target, train=self.train, key=key)


def value_and_grad(model: Layer, loss: Loss, *, train: bool = True) -> ValueAndGrad:
    """Build `f(params, x, target, *, key=None) -> (value, grads)`; jittable and vmappable.

    Args:
      model: a Layer (e.g. a `Sequential`).
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
      with `fnnet.trainable_mask(params)`. `f` draws with `key` as given: in a
      loop of your own, pass each step its own key (e.g.
      `jax.random.fold_in(key, step)`), or Dropout draws the same mask every
      step (`train_step` and `fit` fold in the step count themselves).

    Example:
      >>> value, grads = jax.jit(value_and_grad(model, LossBCE()))(params, x, y)
    """
    check_kinds("value_and_grad", model, loss)
    return ValueAndGrad(model, loss, check_train("value_and_grad", train))


@dataclasses.dataclass(frozen=True)
class _AsJax:
    model: Layer
    train: bool

    def __call__(self, params, x, key=None):
        return _as_jax_train(self.model, params, x, key) if self.train else _as_jax(self.model, params, x)


def as_jax(model: Layer, *, train: bool = False):
    """`f(params, x) = model.apply(params, x)` whose JAX derivative is the hand VJP.

    `f` is a `jax.custom_vjp` function, so JAX's reverse-mode autodiff (grad,
    vjp), jit, vmap and optimizers written for JAX work on fnnet models while
    using fnnet's hand-derived backward pass. Forward mode (jvp) is not defined.
    With `train=True` it is `f(params, x, key) = model.apply(params, x, train=True, key=key)`.

    With another optimizer (optax), leave the leaves under `fnnet.State` (running
    statistics) out of its update (their gradients are zero in training mode), and
    move them as the step's forward pass moves them, from the params before the step:

        mask = fnnet.trainable_mask(params)                     # False under State
        tx = optax.masked(optax.adamw(1e-3), mask)
        grads = grad_of_loss(params)        # JAX's autodiff of your loss through f
        updates, tx_state = tx.update(grads, tx_state, params)
        params = optax.apply_updates(fnnet.update_state(model, params, x, key=key), updates)

    (fnnet's own optimizers and `train_step` do both themselves.)

    Example:
      >>> f = as_jax(model)
      >>> loss = lambda p: jnp.mean(f(p, x) ** 2)
      >>> # JAX's grad of `loss` now runs model.vjp for the model's part
    """
    if not isinstance(model, Layer):
        raise TypeError(f"as_jax: model must be a Layer, got {describe(model)}")
    return _AsJax(model, check_train("as_jax", train))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _as_jax(model, params, x):
    return model.apply(params, x)


def _as_jax_forward(model, params, x):
    return model.apply(params, x), (params, x)


def _as_jax_backward(model, residuals, dy):
    params, x = residuals
    return model.vjp(params, x, dy)


_as_jax.defvjp(_as_jax_forward, _as_jax_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _as_jax_train(model, params, x, key):
    return model.apply(params, x, train=True, key=key)


def _as_jax_train_forward(model, params, x, key):
    return _as_jax_train(model, params, x, key), (params, x, key)


def _as_jax_train_backward(model, residuals, dy):
    params, x, key = residuals
    return (*model.vjp(params, x, dy, train=True, key=key), None)  # no cotangent for key


_as_jax_train.defvjp(_as_jax_train_forward, _as_jax_train_backward)
