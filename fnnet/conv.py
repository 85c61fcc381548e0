"""Convolutions on NHWC images, each with a hand-derived VJP.

- `Conv2D`: a strided 2-D convolution (a cross-correlation, as in every DL library).
- `ConvTranspose2D`: its transpose (the gradient of a convolution), upsampling by the stride.

(`fnnet.pool` has the parameter-free image layers: upsampling, pooling, `Flatten`.)

Images are `(n, h, w, c)`: batch, height, width, channels last. Kernels are
`(kh, kw, c_in, c_out)`. Every `apply` and `vjp` takes the keyword-only `train`
and `key` of the layer contract and ignores them. The derivations are in
docs/conv_vjp.md.

The VJPs of a convolution are convolutions again: the three `_correlate*` helpers
below compute a correlation and its transposes in the input and in the kernel,
and `Conv2D` and `ConvTranspose2D` use them in swapped roles.
"""

import dataclasses
from typing import Any, Callable, Optional

import jax.numpy as jnp
import numpy as np
from jax import lax

from fnnet._checks import check_init, describe, is_int
from fnnet._values import setattr_frozen
from fnnet.layers import (
    Layer,
    check_cotangent,
    check_floating,
    check_size,
    check_weights,
    check_weights_settings,
    draw_weights,
    weights_field,
)

__all__ = ["Conv2D", "ConvTranspose2D"]


# --- argument checks ------------------------------------------------------------------


def _pair(name: str, value, low: int = 1) -> tuple:
    """An int or a pair of ints, as a pair."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return tuple(check_size(f"{name}[{i}]", v, low) for i, v in enumerate(value))
    if is_int(value):
        return (check_size(name, value, low),) * 2
    raise TypeError(f"{name} must be an int or a pair of ints, got {describe(value)}")


def _check_padding(name: str, padding, allow_int: bool):
    """'SAME' or 'VALID' (any case), or an int >= 0 where `allow_int`."""
    expected = "'SAME', 'VALID'" + (" or an int >= 0" if allow_int else "")
    if isinstance(padding, str):
        if padding.upper() in ("SAME", "VALID"):
            return padding.upper()
        raise ValueError(f"{name} must be {expected}, got {padding!r}")
    if allow_int and is_int(padding):
        return check_size(name, padding, 0)
    raise TypeError(f"{name} must be {expected}, got {describe(padding)}")


def _check_image(name: str, shape, channels=None) -> tuple:
    """`shape` as a tuple, checked to be `(n, h, w, channels)`."""
    shape = tuple(shape)
    c = "c" if channels is None else channels
    if len(shape) != 4 or channels not in (None, shape[3]):
        what = "4-D input" if len(shape) != 4 else f"input with {channels} channels"
        raise ValueError(f"{name}: expected {what} (n, h, w, {c}), got shape {shape}")
    return shape


def _check_fits(name: str, hw, pads, window) -> None:
    padded = tuple(size + lo + hi for size, (lo, hi) in zip(hw, pads))
    if any(size < k for size, k in zip(padded, window)):
        raise ValueError(
            f"{name}: input of spatial size {tuple(hw)} (padded {padded}) is smaller than the window {window}"
        )


def _pads(padding, size: int, k: int, s: int) -> tuple:
    """(lo, hi) zero padding of one spatial dim; 'SAME' as lax pads it (out = ceil(size/s))."""
    if padding == "VALID":
        return (0, 0)
    if padding == "SAME":
        total = max((-(-size // s) - 1) * s + k - size, 0)
        return (total // 2, total - total // 2)
    return (padding, padding)


def _out_size(size: int, pad: tuple, k: int, s: int) -> int:
    return (size + pad[0] + pad[1] - k) // s + 1


# --- correlation and its two transposes -----------------------------------------------


def _as_hwio(w, w_spec):
    """The kernel laid out (kh, kw, c_in, c_out): XLA's CPU backend runs other layouts of a
    convolution inside a training loop many times slower, so kernels are transposed here."""
    return w if w_spec == "HWIO" else jnp.transpose(w, (0, 1, 3, 2))  # HWOI -> HWIO


def _patches(x, pads, k_hw, stride, out_hw, hw_axes, axis):
    """The kh kw strided patches of x, zero-padded on its two spatial axes `hw_axes`,
    stacked on `axis` in row-major kernel order: patch (a, b) holds xpad[i*sh + a, j*sw + b]
    for every output pixel (i, j) (rows the convolution drops are never read)."""
    config = [(0, 0, 0)] * x.ndim
    for ax, (lo, hi) in zip(hw_axes, pads):
        config[ax] = (lo, hi, 0)
    xpad = lax.pad(x, jnp.zeros((), x.dtype), config)

    def patch(a, b):
        start, limit, strides = [0] * x.ndim, list(xpad.shape), [1] * x.ndim
        for ax, offset, s, out in zip(hw_axes, (a, b), stride, out_hw):
            start[ax], limit[ax], strides[ax] = offset, offset + (out - 1) * s + 1, s
        return lax.slice(xpad, start, limit, strides)

    return jnp.stack([patch(a, b) for a in range(k_hw[0]) for b in range(k_hw[1])], axis=axis)


# A convolution whose patches hold at most this many values runs as one product of them.
_PRODUCT_VALUES = 1 << 22


def _as_product(x, k_hw, out_hw) -> bool:
    """Whether a convolution of x runs as one matrix product of its patches: XLA's CPU
    backend runs small convolutions through a generic loop, which the product beats, and
    in training the kernel gradient reuses the same patches (XLA builds them once). Up to
    `_PRODUCT_VALUES` patch values (16 MiB of float32); larger ones run as convolutions."""
    return x.shape[0] * out_hw[0] * out_hw[1] * k_hw[0] * k_hw[1] * x.shape[3] <= _PRODUCT_VALUES


def _patch_matrix(x, pads, k_hw, stride, out_hw):
    """x's patches as one matrix, (n oh ow, kh kw c): row (n, i, j) holds window (i, j)."""
    patches = _patches(x, pads, k_hw, stride, out_hw, (1, 2), axis=3)  # (n, oh, ow, kh kw, c)
    return patches.reshape(-1, k_hw[0] * k_hw[1] * x.shape[3])


def _correlate(x, w, stride, pads, w_spec="HWIO"):
    """y[n, i, j, o] = sum_{a, b, c} xpad[n, i*sh + a, j*sw + b, c] w[a, b, c, o]."""
    w = _as_hwio(w, w_spec)
    (kh, kw, c_in, c_out), (n, h, wd, _) = w.shape, x.shape
    out_hw = tuple(_out_size(size, pad, k, s) for size, pad, k, s in zip((h, wd), pads, (kh, kw), stride))
    if not _as_product(x, (kh, kw), out_hw):
        return lax.conv_general_dilated(x, w, stride, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    # the same sum, as (n oh ow, kh kw c_in) @ (kh kw c_in, c_out)
    y = _patch_matrix(x, pads, (kh, kw), stride, out_hw) @ w.reshape(kh * kw * c_in, c_out)
    return y.reshape((n,) + out_hw + (c_out,))


def _correlate_dx(dy, w, stride, pads, in_hw, w_spec="HWIO"):
    """`_correlate`'s transpose in x, for x of spatial size `in_hw`: dy dilated by the
    stride, correlated with the flipped kernel (input and output channels swapped)."""
    w = _as_hwio(w, w_spec)
    k_hw, out_hw = w.shape[:2], dy.shape[1:3]
    # Before dy: k - 1 - lo zeros (x row 0 met kernel row lo; negative = a cut). After:
    # zeros up to x's last row, past dy's last window when the forward dropped rows.
    pads_t = [
        (k - 1 - lo, size + lo - (out - 1) * s - 1)
        for k, (lo, _), size, out, s in zip(k_hw, pads, in_hw, out_hw, stride)
    ]
    flipped = jnp.transpose(lax.rev(w, (0, 1)), (0, 1, 3, 2))  # (kh, kw, c_out, c_in)
    return lax.conv_general_dilated(
        dy, flipped, (1, 1), pads_t, lhs_dilation=stride, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _correlate_dw(x, dy, stride, pads, k_hw):
    """`_correlate`'s transpose in w, shape (kh, kw, c_x, c_dy):
    dw[a, b] = sum_{n, i, j} xpad[n, i*sh + a, j*sw + b]^T dy[n, i, j], one product of
    the kh kw strided patches of the padded x with dy. Where the forward is a product, its
    patch matrix serves (the same expression: XLA builds it once); else the patches are
    cut from x laid out (c_x, n, h, w), so that the product's rows (c_x, a, b) need no
    transpose."""
    (n, _, _, c_x), (oh, ow, c_dy) = x.shape, dy.shape[1:]
    if _as_product(x, k_hw, (oh, ow)):
        dw = _patch_matrix(x, pads, k_hw, stride, (oh, ow)).T @ dy.reshape(n * oh * ow, c_dy)
        return dw.reshape(k_hw + (c_x, c_dy))
    x_cnhw = jnp.transpose(x, (3, 0, 1, 2))
    patches = _patches(x_cnhw, pads, k_hw, stride, (oh, ow), (2, 3), axis=1)  # (c_x, kh kw, n, oh, ow)
    dw = patches.reshape(c_x * k_hw[0] * k_hw[1], n * oh * ow) @ dy.reshape(n * oh * ow, c_dy)
    return jnp.transpose(dw.reshape((c_x,) + k_hw + (c_dy,)), (1, 2, 0, 3))


def _promoted(*arrays):
    """The arrays in their common dtype (lax's convolutions take one dtype)."""
    dtype = jnp.result_type(*arrays)
    return [jnp.asarray(a, dtype) for a in arrays]


# --- convolutions ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, repr=False)
class _Convolution(Layer):
    """What Conv2D and ConvTranspose2D share: their settings, checks, params and init."""

    c_in: int
    c_out: int
    kernel_size: Any
    stride: Any = 1
    padding: Any = "SAME"
    w_init: Optional[Callable] = weights_field()
    b_init: Optional[Callable] = weights_field()
    dtype: Any = weights_field(np.dtype("float32"))

    def __post_init__(self):
        owner = type(self).__name__
        setattr_frozen(
            self,
            c_in=check_size(f"{owner}: c_in", self.c_in),
            c_out=check_size(f"{owner}: c_out", self.c_out),
            kernel_size=_pair(f"{owner}: kernel_size", self.kernel_size),
            stride=_pair(f"{owner}: stride", self.stride),
            padding=_check_padding(f"{owner}: padding", self.padding, allow_int=owner == "Conv2D"),
        )
        check_weights_settings(self, owner)

    @property
    def name(self) -> str:
        return (
            f"{type(self).__name__}(c_in={self.c_in}, c_out={self.c_out}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding!r})"
        )

    def init(self, key, input_shape):
        """w `(kh, kw, c_in, c_out)` and b drawn with `w_init`, `b_init` (by default
        U[-1/sqrt(fan_in), 1/sqrt(fan_in)], fan_in = kh kw c_in) in `dtype`."""
        output_shape = self.geometry(check_init(self.name, key, input_shape))[1]
        w_shape = self.kernel_size + (self.c_in, self.c_out)
        return output_shape, draw_weights(self, key, w_shape, w_shape[0] * w_shape[1] * self.c_in)

    def check(self, params, x):
        """`(w, b, pads, y_shape)` for x."""
        w, b = check_weights(self.name, params, self.kernel_size + (self.c_in, self.c_out), (self.c_out,))
        check_floating(self.name, x)
        return (w, b) + self.geometry(jnp.shape(x))


@dataclasses.dataclass(frozen=True, repr=False)
class Conv2D(_Convolution):
    """A 2-D convolution: `y = correlate(x, w) + b`, with stride and zero padding.

    Args:
      c_in, c_out: input and output channels.
      kernel_size: an int k (a k x k kernel) or a pair (kh, kw).
      stride: an int or a pair (sh, sw).
      padding: 'SAME' (h_out = ceil(h / sh); the zeros split as lax splits them, an
        odd one at the bottom/right), 'VALID' (h_out = (h - kh) // sh + 1), or an
        int p (p zeros on every side: h_out = (h + 2p - kh) // sh + 1). Any case.
      w_init, b_init: optional `(key, shape, dtype) -> array` initializers; by default
        both draw from U[-1/sqrt(fan_in), 1/sqrt(fan_in)], fan_in = kh * kw * c_in.
      dtype: dtype of the parameters made by `init`.

    Params: `{"w": (kh, kw, c_in, c_out), "b": (c_out,)}`. Input `(n, h, w, c_in)`,
    output `(n, h_out, w_out, c_out)`; rows past the last full window are dropped.

    Example:
      >>> layer = Conv2D(3, 8, 3, stride=2)
      >>> layer.init(jax.random.key(0), (10, 32, 31, 3))[0]
      (10, 16, 16, 8)
    """

    def geometry(self, input_shape):
        """The zero padding of the input and the output shape."""
        n, h, w, _ = _check_image(self.name, input_shape, self.c_in)
        kernel, stride = self.kernel_size, self.stride
        pads = tuple(_pads(self.padding, size, k, s) for size, k, s in zip((h, w), kernel, stride))
        _check_fits(self.name, (h, w), pads, kernel)
        out_hw = tuple(_out_size(size, pad, k, s) for size, pad, k, s in zip((h, w), pads, kernel, stride))
        return pads, (n,) + out_hw + (self.c_out,)

    def apply(self, params, x, *, train=False, key=None):
        w, b, pads, _ = self.check(params, x)
        return _correlate(*_promoted(x, w), self.stride, pads) + b.reshape(1, 1, 1, self.c_out)

    def vjp(self, params, x, dy, *, train=False, key=None):
        w, b, pads, y_shape = self.check(params, x)
        check_cotangent(self.name, dy, y_shape)
        xp, wp, dyp = _promoted(x, w, dy)
        db = jnp.sum(dy, axis=(0, 1, 2))  # db = sum over n, i, j of dy
        # dw[a, b] = sum_{n, i, j} xpad[n, i*sh + a, j*sw + b]^T dy[n, i, j]
        dw = _correlate_dw(xp, dyp, self.stride, pads, self.kernel_size)
        # dx[n, p, q] = sum_{i*sh + a = p + lo_h, j*sw + b = q + lo_w} dy[n, i, j] w[a, b]^T
        dx = _correlate_dx(dyp, wp, self.stride, pads, jnp.shape(x)[1:3])
        return {"w": dw.astype(w.dtype), "b": db.astype(b.dtype)}, dx.astype(x.dtype)


@dataclasses.dataclass(frozen=True, repr=False)
class ConvTranspose2D(_Convolution):
    """The transpose of a strided convolution: each input pixel adds `x[n, i, j] @ w[a, b]`
    to output pixel `(i*sh + a - lo_h, j*sw + b - lo_w)`, then `+ b`.

    It is the transpose (the gradient in its input) of `Conv2D(c_out, c_in, kernel_size,
    stride, padding)` on an image of this layer's output size, whose w is this w with
    input and output channels swapped. For 'SAME', and 'VALID' with kh >= sh, it equals
    `lax.conv_transpose(x, w, stride, padding, ("NHWC", "HWOI", "NHWC"), transpose_kernel=True)`
    (whose 'VALID' gives h * sh rows when kh < sh).

    Args:
      c_in, c_out: input and output channels.
      kernel_size, stride: an int or a pair.
      padding: 'VALID': h_out = (h - 1) * sh + kh, every product kept (lo = 0).
        'SAME': h_out = h * sh, the products cropped as `Conv2D`'s 'SAME' pads an
        image of size h * sh (lo_h = max(kh - sh, 0) // 2; zeros at the end when kh < sh).
      w_init, b_init, dtype: as in `Conv2D`, fan_in = kh * kw * c_in.

    Params: `{"w": (kh, kw, c_in, c_out), "b": (c_out,)}`. Input `(n, h, w, c_in)`,
    output `(n, h_out, w_out, c_out)`.

    Example:
      >>> layer = ConvTranspose2D(8, 3, 4, stride=2)
      >>> layer.init(jax.random.key(0), (10, 16, 15, 8))[0]
      (10, 32, 30, 3)
    """

    def geometry(self, input_shape):
        """The padding of the Conv2D this layer transposes, and the output shape."""
        n, h, w, _ = _check_image(self.name, input_shape, self.c_in)
        if h < 1 or w < 1:
            raise ValueError(
                f"{self.name}: expected an image of at least 1 x 1 pixels, got shape {input_shape}"
            )
        kernel, stride = self.kernel_size, self.stride
        out_hw = tuple(
            size * s if self.padding == "SAME" else (size - 1) * s + k
            for size, k, s in zip((h, w), kernel, stride)
        )
        pads = tuple(_pads(self.padding, size, k, s) for size, k, s in zip(out_hw, kernel, stride))
        return pads, (n,) + out_hw + (self.c_out,)

    def apply(self, params, x, *, train=False, key=None):
        w, b, pads, y_shape = self.check(params, x)
        y = _correlate_dx(*_promoted(x, w), self.stride, pads, y_shape[1:3], w_spec="HWOI")
        return y + b.reshape(1, 1, 1, self.c_out)

    def vjp(self, params, x, dy, *, train=False, key=None):
        w, b, pads, y_shape = self.check(params, x)
        check_cotangent(self.name, dy, y_shape)
        xp, wp, dyp = _promoted(x, w, dy)
        db = jnp.sum(dy, axis=(0, 1, 2))  # db = sum over n, i, j of dy
        # dw[a, b] = sum_{n, i, j} x[n, i, j]^T dypad[n, i*sh + a, j*sw + b]
        dw = jnp.transpose(_correlate_dw(dyp, xp, self.stride, pads, self.kernel_size), (0, 1, 3, 2))
        # dx[n, i, j] = sum_{a, b} dypad[n, i*sh + a, j*sw + b] w[a, b]^T: the strided conv
        dx = _correlate(dyp, wp, self.stride, pads, w_spec="HWOI")
        return {"w": dw.astype(w.dtype), "b": db.astype(b.dtype)}, dx.astype(x.dtype)
