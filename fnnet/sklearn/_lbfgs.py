"""Full-batch L-BFGS with a weak Wolfe line search, one compiled `lax.while_loop`.

`minimize(fun, x0, ...)` minimizes `fun(x) -> (value, gradient)` over a flat vector, as
scikit-learn's `solver="lbfgs"` does through SciPy's L-BFGS-B (no bounds): stop when the
gradient's largest entry is at most `gtol`, when an iteration lowers the value by at
most `ftol` relative to it, or after `max_iter` iterations or `max_fun` evaluations.
`fit_lbfgs` runs it on a model's params, with the gradients from fnnet's hand VJPs.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from fnnet._checks import INT32_MAX
from fnnet.grad import loss_and_grads_in

__all__ = ["minimize", "fit_lbfgs", "not_converged", "CONVERGED", "MAX_ITER", "MAX_FUN", "LINE_SEARCH_FAILED"]

RUNNING, CONVERGED, MAX_ITER, MAX_FUN, LINE_SEARCH_FAILED = 0, 1, 2, 3, 4
_C1, _C2 = 1e-4, 0.9  # sufficient decrease and curvature (weak Wolfe)
_MAX_LS = 20  # evaluations per line search
_FTOL = 2.220446049250313e-09  # SciPy's default factr * machine epsilon


class Result(NamedTuple):
    """x, its value, iterations taken, evaluations of fun, and why it stopped (a code)."""

    x: jax.Array
    value: jax.Array
    n_iter: jax.Array
    n_fun: jax.Array
    status: jax.Array


def _direction(g, s_hist, y_hist, rho, stored, newest):
    """-H g by the two-loop recursion over the `stored` newest pairs (a ring buffer)."""
    m = s_hist.shape[0]

    def back(j, carry):  # newest to oldest
        q, alphas = carry
        i = (newest - j) % m
        a = jnp.where(j < stored, rho[i] * jnp.dot(s_hist[i], q), 0)
        return q - a * y_hist[i], alphas.at[i].set(a)

    q, alphas = lax.fori_loop(0, m, back, (g, jnp.zeros((m,), g.dtype)))
    yy = jnp.dot(y_hist[newest], y_hist[newest])
    gamma = jnp.where(stored > 0, jnp.dot(s_hist[newest], y_hist[newest]) / jnp.where(yy > 0, yy, 1), 1)

    def forward(j, r):  # oldest to newest
        age = m - 1 - j
        i = (newest - age) % m
        b = rho[i] * jnp.dot(y_hist[i], r)
        return r + jnp.where(age < stored, alphas[i] - b, 0) * s_hist[i]

    return -lax.fori_loop(0, m, forward, gamma.astype(g.dtype) * q)


def _line_search(fun, x, f, g, d, step, budget):
    """A step along d meeting the weak Wolfe conditions, by bisection and doubling.

    Returns `(ok, x_new, f_new, g_new, evaluations)`: ok when a Wolfe step was found, or
    (after `_MAX_LS` or `budget` evaluations) the best step that lowered the value enough.
    """
    gd = jnp.dot(g, d)
    inf = jnp.asarray(jnp.inf, step.dtype)

    def cond(c):
        return ~c[0] & (c[4] < jnp.minimum(_MAX_LS, budget))

    def body(c):
        _, t, low, high, evals, best = c
        x_t = x + t * d
        f_t, g_t = fun(x_t)
        decrease = jnp.isfinite(f_t) & (f_t <= f + _C1 * t * gd)
        curved = jnp.dot(g_t, d) >= _C2 * gd
        better = decrease & (f_t < best[1])
        best = jax.tree.map(lambda new, old: jnp.where(better, new, old), (x_t, f_t, g_t), best)
        high = jnp.where(decrease, high, t)
        low = jnp.where(decrease & ~curved, t, low)
        t_next = jnp.where(jnp.isinf(high), 2 * t, (low + high) / 2)
        return decrease & curved, t_next, low, high, evals + 1, best

    init = (jnp.bool_(False), step, jnp.zeros_like(step), inf, jnp.int32(0), (x, f, g))
    found, _, _, _, evals, best = lax.while_loop(cond, body, init)
    moved = best[1] < f
    return found | moved, best[0], best[1], best[2], evals


def minimize(fun, x0, *, max_iter, max_fun, gtol, ftol=_FTOL, history: int = 10) -> Result:
    """Minimize `fun(x) -> (value, gradient)` from the flat vector `x0` by L-BFGS.

    Args:
      fun: traceable, x `(d,)` -> a scalar and `(d,)`.
      x0: `(d,)` floating point.
      max_iter, max_fun: iterations and evaluations at most (traced ints >= 1).
      gtol: stop once max |gradient| <= gtol; ftol: once an iteration's relative
        decrease (f_k - f_k+1) / max(|f_k|, |f_k+1|, 1) <= ftol.
      history: the pairs (s, y) kept (static).

    Returns:
      Result(x, value, n_iter, n_fun, status), status one of CONVERGED, MAX_ITER,
      MAX_FUN, LINE_SEARCH_FAILED.
    """
    d_size, dtype = x0.shape[0], x0.dtype
    f0, g0 = fun(x0)
    zeros = jnp.zeros((history, d_size), dtype)
    status0 = jnp.where(jnp.max(jnp.abs(g0)) <= gtol, CONVERGED, RUNNING).astype(jnp.int32)
    status0 = jnp.where((status0 == RUNNING) & (max_fun <= 1), MAX_FUN, status0)
    int32 = jnp.int32
    init = (
        x0,
        f0,
        g0,
        zeros,
        zeros,
        jnp.zeros((history,), dtype),
        int32(0),
        int32(0),
        int32(0),
        int32(1),
        status0,
    )

    def body(c):
        x, f, g, s_hist, y_hist, rho, stored, newest, k, n_fun, _ = c
        d = _direction(g, s_hist, y_hist, rho, stored, newest)
        descent = jnp.dot(g, d) < 0
        d = jnp.where(descent, d, -g)  # a lost curvature: start again from the gradient
        stored = jnp.where(descent, stored, 0)
        first = stored == 0
        step = jnp.where(first, jnp.minimum(1, 1 / jnp.maximum(jnp.linalg.norm(d), 1e-30)), 1).astype(dtype)
        ok, x1, f1, g1, evals = _line_search(fun, x, f, g, d, step, max_fun - n_fun)
        s, y = x1 - x, g1 - g
        sy = jnp.dot(s, y)
        keep = ok & (sy > 1e-10 * jnp.dot(y, y))
        slot = jnp.where(stored == 0, 0, (newest + 1) % history)
        s_hist = jnp.where(keep, s_hist.at[slot].set(s), s_hist)
        y_hist = jnp.where(keep, y_hist.at[slot].set(y), y_hist)
        rho = jnp.where(keep, rho.at[slot].set(1 / jnp.where(keep, sy, 1)), rho)
        newest = jnp.where(keep, slot, newest)
        stored = jnp.where(keep, jnp.minimum(stored + 1, history), stored)
        k, n_fun = k + 1, n_fun + evals
        relative = (f - f1) / jnp.maximum(jnp.maximum(jnp.abs(f), jnp.abs(f1)), 1)
        status = jnp.where(
            ~ok,
            LINE_SEARCH_FAILED,
            jnp.where(
                (jnp.max(jnp.abs(g1)) <= gtol) | (relative <= ftol),
                CONVERGED,
                jnp.where(k >= max_iter, MAX_ITER, jnp.where(n_fun >= max_fun, MAX_FUN, RUNNING)),
            ),
        ).astype(jnp.int32)
        x, f, g = (jnp.where(ok, new, old) for new, old in ((x1, x), (f1, f), (g1, g)))
        return x, f, g, s_hist, y_hist, rho, stored, newest, k, n_fun, status

    out = lax.while_loop(lambda c: c[-1] == RUNNING, body, init)
    return Result(out[0], out[1], out[8], out[9], out[10])


def _fit(loss, model, params, x, y, weights, l2, max_iter, max_fun, gtol):
    flat0, unravel = ravel_pytree(params)
    # 1 for the entries of weight matrices (penalized), 0 for intercepts
    penalized, _ = ravel_pytree(jax.tree.map(lambda p: jnp.full(p.shape, p.ndim >= 2, p.dtype), params))
    share = weights / jnp.sum(weights)

    def fun(flat):
        value, grads = loss_and_grads_in(model, loss, unravel(flat), x, y, train=False, key=None, share=share)
        grad = ravel_pytree(grads)[0]
        penalty = 0.5 * l2 * jnp.sum(penalized * flat * flat)
        return value.astype(flat.dtype) + penalty, grad.astype(flat.dtype) + l2 * penalized * flat

    result = minimize(fun, flat0, max_iter=max_iter, max_fun=max_fun, gtol=gtol)
    return unravel(result.x), result


# one program per loss, model structure and shapes (a data size's bucket): the model is
# an argument, the numbers (l2, limits, tolerance) traced
_fit_jit = jax.jit(_fit, static_argnums=0)


def fit_lbfgs(model, loss, params, x, y, weights, *, l2, max_iter, max_fun, gtol):
    """Train `model` (inference mode: no Dropout or BatchNorm) on the whole of `(x, y)`.

    Args:
      model, loss: a Layer and a Loss; params: the model's params to start from.
      x, y, weights: padded data (`fnnet._buckets`), weights 0 for padding.
      l2: alpha / (sum of the sample weights): the penalty 0.5 * l2 * sum(w**2) of the
        weight matrices (leaves of 2 or more axes).
      max_iter, max_fun, gtol: as `minimize`.

    Returns:
      `(params, Result)`.
    """
    dtype = jax.tree.leaves(params)[0].dtype
    return _fit_jit(
        loss,
        model,
        params,
        x,
        y,
        weights,
        jnp.asarray(l2, dtype),
        jnp.int32(min(max_iter, INT32_MAX)),  # the counts are int32: 2**31 - 1 is "unbounded"
        jnp.int32(min(max_fun, INT32_MAX)),
        jnp.asarray(gtol, dtype),
    )


def not_converged(status: int, n_iter: int, max_iter: int) -> str:
    """scikit-learn's ConvergenceWarning message for a run that stopped with `status`."""
    why = {
        MAX_ITER: "STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT",
        MAX_FUN: "STOP: TOTAL NO. OF F,G EVALUATIONS EXCEEDS LIMIT",
        LINE_SEARCH_FAILED: "ABNORMAL: the line search found no lower value",
    }[status]
    return (
        f"lbfgs failed to converge after {n_iter} iteration(s) (status={status}):\n{why}.\n\n"
        f"Increase the number of iterations to improve the convergence (max_iter={max_iter}), "
        f"or scale the data."
    )
