"""Forward passes per training step: how often an activation's f runs (scripts/benchmarks/forward.py).

Eagerly, `value_and_grad` runs f three times per activation layer: in `apply`,
in the serial's `vjp` (its forward, collecting inputs) and in the elementwise
`vjp` (f(x) for f'). Under `jit`, XLA merges the three: the optimized HLO holds
one tanh per Tanh layer, unless a VJP computes it by another expression.
"""

import jax.numpy as jnp
from benchmarks import forward

import fnnet


def _tanh_apply(params, x, *, train=False, key=None):
    return jnp.tanh(x)


def _tanh_vjp_again(params, x, dy, *, train=False, key=None):
    y = -jnp.tanh(-x)  # tanh(x) by another expression: XLA cannot merge it with apply's
    return (), dy * (1 - y * y)


TANH_TWICE = fnnet.Layer(fnnet.Tanh().init, _tanh_apply, _tanh_vjp_again)


SIZES, N = (2, 4, 4, 1), 16  # a small W1: Linear layers of SIZES, N points


def compiled_tanh_ops(tanh):
    """tanh instructions in the optimized HLO of a jitted value_and_grad through 2 `tanh` layers."""
    layers = forward.w1_layers(tanh, SIZES)
    params, x, y = forward.numpy_inputs(layers, N)
    f = fnnet.value_and_grad(fnnet.serial(*layers), fnnet.LossBCE())
    return forward.hlo_ops(f, params, x, y, ops=("tanh",))["tanh"]


def test_jitted_value_and_grad_computes_each_activation_once():
    assert compiled_tanh_ops(fnnet.Tanh()) == 2


def test_the_hlo_count_sees_an_activation_computed_twice():
    # per layer: apply's tanh (the serial vjp's forward merged with it) and the vjp's own
    assert compiled_tanh_ops(TANH_TWICE) == 4


def test_f_runs_three_times_per_eager_call_and_once_in_the_prototype():
    # fnnet: loss_and_grads' apply, the serial vjp's forward, the elementwise vjp's f(x)
    assert forward.f_calls(SIZES, N) == {
        ("fnnet", "eager"): 3,
        ("fnnet", "jit, traced"): 3,
        ("one forward", "eager"): 1,
        ("one forward", "jit, traced"): 1,
    }
