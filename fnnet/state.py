"""Non-trainable state inside params: `State`, and how optimizers and training find it.

A layer such as `BatchNorm` keeps values that training changes but no
optimizer may touch (running statistics). They live in the layer's params,
inside a `State` node: `{"scale": ..., "shift": ..., "running": State(mean=..., var=...)}`.
So `model.apply(params, x)` finds them without help, `save`/`load`, `sweep` and
`fit` carry them like any other leaf, and optimizers leave every leaf under a
`State` as it is (no step, no weight decay, no momentum).
"""

from typing import Any, List

import jax
import jax.numpy as jnp

from fnnet._checks import as_array, describe
from fnnet.layers import Layer

__all__ = ["State", "trainable_mask", "update_state", "state_leaves", "with_state", "check_update"]


@jax.tree_util.register_pytree_with_keys_class
class State(dict):
    """A dict of arrays that optimizers never change; a pytree node like a dict.

    Example:
      >>> running = State(mean=jnp.zeros(3), var=jnp.ones(3))
      >>> sorted(running)
      ['mean', 'var']
    """

    def tree_flatten_with_keys(self):
        names = sorted(self)
        return [(jax.tree_util.DictKey(name), self[name]) for name in names], tuple(names)

    def tree_flatten(self):
        names = sorted(self)
        return [self[name] for name in names], tuple(names)

    @classmethod
    def tree_unflatten(cls, names, values):
        return cls(zip(names, values))

    def __repr__(self):
        return f"State({dict.__repr__(self)})"


def _is_state(node) -> bool:
    return isinstance(node, State)


def trainable_mask(params) -> Any:
    """A tree like `params` of Python bools: True where an optimizer may change the leaf."""
    return jax.tree.map(
        lambda node: jax.tree.map(lambda _: False, node) if _is_state(node) else True,
        params,
        is_leaf=_is_state,
    )


def update_state(model, params, x, *, key=None) -> Any:
    """`params` after one training step's forward pass on `x`: the leaves under `State`
    moved by `model.update_state` (BatchNorm's running statistics), the others as they
    are; `params` unchanged for a model without state. For training with an optimizer of
    your own (see `fnnet.as_jax`): fnnet's training does it after every step. `key` is the
    step's key, the one its forward pass drew with.

    Example:
      >>> params = update_state(model, params, x)
    """
    if not isinstance(model, Layer):
        raise TypeError(f"update_state: model must be a Layer, got {describe(model)}")
    if model.update_state is None:
        return params
    x = jnp.asarray(as_array("update_state", "x", x))
    return check_update(params, model.update_state(params, x, key=key))


def state_leaves(params) -> List:
    """The leaves of `params` that sit under a `State`, in tree order."""
    mask = jax.tree.leaves(trainable_mask(params))
    return [leaf for trainable, leaf in zip(mask, jax.tree.leaves(params)) if not trainable]


def with_state(params, leaves: List) -> Any:
    """`params` with the leaves under its `State` nodes replaced by `leaves` (tree order)."""
    mask = jax.tree.leaves(trainable_mask(params))
    flat, treedef = jax.tree.flatten(params)
    replacements = iter(leaves)
    flat = [leaf if trainable else next(replacements, None) for trainable, leaf in zip(mask, flat)]
    if any(leaf is None for leaf in flat) or next(replacements, None) is not None:
        raise ValueError(
            f"with_state: {len(leaves)} leaves given for the {mask.count(False)} under State in params"
        )
    return jax.tree.unflatten(treedef, flat)


def check_update(params, updated) -> Any:
    """Return `updated` (what a layer's `update_state` gave for `params`), checked: the
    same tree as params, with something under a `State` for it to update."""
    if jax.tree.structure(updated) != jax.tree.structure(params):  # type: ignore[operator]
        raise ValueError(
            f"update_state must return params of the structure it was given, "
            f"{jax.tree.structure(params)}; got {jax.tree.structure(updated)}"
        )
    if not state_leaves(params):
        raise ValueError(
            "a layer with update_state keeps its state under fnnet.State nodes in "
            "its params (optimizers leave those alone); its params hold none: "
            f"{jax.tree.structure(params)}"
        )
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, before), after in zip(paths, jax.tree.leaves(updated)):
        if (jnp.shape(before), jnp.result_type(before)) != (jnp.shape(after), jnp.result_type(after)):
            raise ValueError(
                f"update_state must keep each leaf's shape and dtype: params{jax.tree_util.keystr(path)} "
                f"is {jnp.result_type(before)}{list(jnp.shape(before))}, update_state gave "
                f"{jnp.result_type(after)}{list(jnp.shape(after))}"
            )
    return updated
