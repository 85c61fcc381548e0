"""Parameter-free image layers on NHWC images, each with a hand-derived VJP.

- `Upsample2D`: nearest-neighbour upsampling.
- `MaxPool2D`, `AvgPool2D`: max and mean over windows (VALID: no padding).
- `Flatten`: `(n, ...) -> (n, prod(...))`, to feed a `Linear`.

Every `apply` and `vjp` takes the keyword-only `train` and `key` of the layer
contract and ignores them. The derivations are in docs/conv_vjp.md.
"""

import dataclasses
import functools
import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from fnnet._precision import wide
from fnnet._values import setattr_frozen
from fnnet.conv import _check_fits, _check_image, _out_size, _pair
from fnnet.layers import Parameterless, check_cotangent, check_floating, check_no_params

__all__ = ["Upsample2D", "MaxPool2D", "AvgPool2D", "Flatten"]


@dataclasses.dataclass(frozen=True, repr=False)
class Upsample2D(Parameterless):
    """Nearest-neighbour upsampling: every pixel becomes an fh x fw block of copies.

    Args:
      factor: an int f or a pair (fh, fw).

    No params. Input `(n, h, w, c)`, output `(n, h * fh, w * fw, c)`.

    Example:
      >>> Upsample2D(2).init(jax.random.key(0), (10, 7, 5, 3))[0]
      (10, 14, 10, 3)
    """

    factor: tuple

    def __post_init__(self):
        setattr_frozen(self, factor=_pair("Upsample2D: factor", self.factor))

    @property
    def name(self) -> str:
        return f"Upsample2D(factor={self.factor})"

    def output_shape(self, input_shape):
        n, h, w, c = _check_image(self.name, input_shape)
        return (n, h * self.factor[0], w * self.factor[1], c)

    def check(self, params, x):
        check_no_params(self.name, params)
        check_floating(self.name, x)
        return _check_image(self.name, jnp.shape(x))

    def apply(self, params, x, *, train=False, key=None):
        (n, h, w, c), (fh, fw) = self.check(params, x), self.factor
        blocks = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, fh, w, fw, c))
        return blocks.reshape(n, h * fh, w * fw, c)

    def vjp(self, params, x, dy, *, train=False, key=None):
        (n, h, w, c), (fh, fw) = self.check(params, x), self.factor
        check_cotangent(self.name, dy, (n, h * fh, w * fw, c))
        # dx[n, i, j] = sum of dy over the block dy[n, i*fh:(i+1)*fh, j*fw:(j+1)*fw]
        return (), dy.reshape(n, h, fh, w, fw, c).sum(axis=(2, 4)).astype(x.dtype)


def _pool_geometry(name, window, stride, input_shape):
    """The output shape of a VALID pooling: (h - kh) // sh + 1 rows."""
    n, h, w, c = _check_image(name, input_shape)
    _check_fits(name, (h, w), ((0, 0), (0, 0)), window)
    return (n,) + tuple(_out_size(size, (0, 0), k, s) for size, k, s in zip((h, w), window, stride)) + (c,)


def _window_offsets(window):
    """Every pixel (a, b) of a window, in row-major order."""
    return [(a, b) for a in range(window[0]) for b in range(window[1])]


def _window_pixel(x, a, b, stride, out_hw):
    """x[:, i*sh + a, j*sw + b, :] for every window (i, j): pixel (a, b) of each window."""
    end = (x.shape[0], a + (out_hw[0] - 1) * stride[0] + 1, b + (out_hw[1] - 1) * stride[1] + 1, x.shape[3])
    return lax.slice(x, (0, a, b, 0), end, (1,) + stride + (1,))


def _window_pixel_transpose(part, a, b, stride, in_hw):
    """`_window_pixel`'s transpose: part[:, i, j] put back at pixel (i*sh + a, j*sw + b)."""
    (oh, ow), (sh, sw) = part.shape[1:3], stride
    pads = (
        (0, 0, 0),
        (a, in_hw[0] - a - (oh - 1) * sh - 1, sh - 1),
        (b, in_hw[1] - b - (ow - 1) * sw - 1, sw - 1),
        (0, 0, 0),
    )
    return lax.pad(part, jnp.zeros((), part.dtype), pads)


def _first_max_masks(pixels):
    """For a window's pixels listed in row-major order (arrays of one shape, one entry per
    window), whether each is the window's first maximum: equal to the max, no earlier one is."""
    top = functools.reduce(jnp.maximum, pixels)
    masks, earlier = [], jnp.zeros(top.shape, bool)
    for pixel in pixels:
        masks.append((pixel == top) & ~earlier)
        earlier = earlier | masks[-1]
    return masks


def _max_pool_dx_tiled(x, dy, window):
    """MaxPool2D's dx for windows that tile the image (stride == window): a reshape of x to
    (n, oh, kh, ow, kw, c) holds window (i, j)'s pixel (a, b) at [:, i, a, j, b]."""
    (kh, kw), (n, oh, ow, c), (h, w) = window, dy.shape, x.shape[1:3]
    tiles = x[:, : oh * kh, : ow * kw].reshape(n, oh, kh, ow, kw, c)
    masks = _first_max_masks([tiles[:, :, a, :, b] for a, b in _window_offsets(window)])
    # dx[n, i*kh + a, j*kw + b] = dy[n, i, j] where (a, b) is window (i, j)'s first max, else 0
    parts = [jnp.where(mask, dy, 0) for mask in masks]
    dx = jnp.stack([jnp.stack(parts[a * kw : (a + 1) * kw], axis=3) for a in range(kh)], axis=2)
    return jnp.pad(dx.reshape(n, oh * kh, ow * kw, c), ((0, 0), (0, h - oh * kh), (0, w - ow * kw), (0, 0)))


def _max_pool_dx_strided(x, dy, window, stride):
    """MaxPool2D's dx for any stride: each window offset's masked dy put back at its pixels;
    overlapping windows add up."""
    offsets = _window_offsets(window)
    masks = _first_max_masks([_window_pixel(x, a, b, stride, dy.shape[1:3]) for a, b in offsets])
    # dx[p] = sum over the windows whose first max sits at p of their dy
    return sum(
        _window_pixel_transpose(jnp.where(mask, dy, 0), a, b, stride, x.shape[1:3])
        for mask, (a, b) in zip(masks, offsets)
    )


class _Pool(Parameterless):
    """A VALID pooling over `window`s moved by `stride` (a pair; the window by default)."""

    window: tuple
    stride: tuple

    def __post_init__(self):
        window = _pair(f"{type(self).__name__}: window", self.window)
        stride = window if self.stride is None else _pair(f"{type(self).__name__}: stride", self.stride)
        setattr_frozen(self, window=window, stride=stride)

    @property
    def name(self) -> str:
        return f"{type(self).__name__}(window={self.window}, stride={self.stride})"

    def output_shape(self, input_shape):
        return _pool_geometry(self.name, self.window, self.stride, input_shape)

    def check(self, params, x):
        check_no_params(self.name, params)
        check_floating(self.name, x)
        return self.output_shape(jnp.shape(x))

    def reduce(self, x, init, op):
        dims, strides = (1,) + self.window + (1,), (1,) + self.stride + (1,)
        return lax.reduce_window(x, np.array(init, jnp.result_type(x)), op, dims, strides, "VALID")


@dataclasses.dataclass(frozen=True, repr=False)
class MaxPool2D(_Pool):
    """The maximum over each window, VALID (no padding; trailing rows that fill no window
    are dropped).

    The gradient goes to the window's maximum; when several pixels tie for it, all of it
    goes to the first of them in row-major order within the window (row first, then column).
    Overlapping windows (stride < window) add their gradients.

    Args:
      window: an int k or a pair (kh, kw).
      stride: an int or a pair; the window by default (windows that tile the image).

    No params. Input `(n, h, w, c)`, output `(n, (h - kh) // sh + 1, (w - kw) // sw + 1, c)`.

    Example:
      >>> MaxPool2D(2).init(jax.random.key(0), (10, 7, 6, 3))[0]
      (10, 3, 3, 3)
    """

    window: tuple
    stride: tuple = None  # type: ignore[assignment]

    def apply(self, params, x, *, train=False, key=None):
        self.check(params, x)
        return self.reduce(x, -np.inf, lax.max)

    def vjp(self, params, x, dy, *, train=False, key=None):
        check_cotangent(self.name, dy, self.check(params, x))
        # dx[p] = sum over the windows whose first max (row-major) sits at p of their dy
        if self.stride == self.window:
            dx = _max_pool_dx_tiled(x, dy, self.window)
        else:  # overlapping windows add up, in at least float32
            dx = _max_pool_dx_strided(x, wide(dy), self.window, self.stride)
        return (), dx.astype(x.dtype)


@dataclasses.dataclass(frozen=True, repr=False)
class AvgPool2D(_Pool):
    """The mean over each window, VALID (no padding; trailing rows that fill no window are
    dropped), summed in at least float32 (a float16 window of 4e4s overflows), returned
    in the input's dtype. Arguments, shapes and example as for `MaxPool2D`."""

    window: tuple
    stride: tuple = None  # type: ignore[assignment]

    def apply(self, params, x, *, train=False, key=None):
        self.check(params, x)
        return (self.reduce(wide(x), 0, lax.add) / (self.window[0] * self.window[1])).astype(x.dtype)

    def vjp(self, params, x, dy, *, train=False, key=None):
        check_cotangent(self.name, dy, self.check(params, x))
        size, dy = self.window[0] * self.window[1], wide(dy)
        # dx[p] = sum over the windows holding p of dy / (kh kw)
        dx = sum(
            _window_pixel_transpose(dy / size, a, b, self.stride, x.shape[1:3])
            for a, b in _window_offsets(self.window)
        )
        return (), dx.astype(x.dtype)


@dataclasses.dataclass(frozen=True, repr=False)
class Flatten(Parameterless):
    """`(n, d1, d2, ...) -> (n, d1 * d2 * ...)`, row-major (`x.reshape(n, -1)`).

    Example:
      >>> Flatten().init(jax.random.key(0), (10, 3, 3, 4))[0]
      (10, 36)
    """

    def output_shape(self, shape):
        if len(shape) < 2:
            raise ValueError(
                f"{self.name}: expected input (n, ...) of at least 2 dims, got shape {tuple(shape)}"
            )
        return (shape[0], math.prod(shape[1:]))

    def apply(self, params, x, *, train=False, key=None):
        check_no_params(self.name, params)
        check_floating(self.name, x)
        return jnp.reshape(x, self.output_shape(jnp.shape(x)))

    def vjp(self, params, x, dy, *, train=False, key=None):
        check_no_params(self.name, params)
        check_floating(self.name, x)
        check_cotangent(self.name, dy, self.output_shape(jnp.shape(x)))
        return (), jnp.reshape(dy, jnp.shape(x)).astype(x.dtype)  # dx = dy reshaped back
