"""Command-line options the scripts share: numbers checked as argparse reads them (an
error names the option before any work), and the `--plot` folder made and checked
writable before training, not after it.

    parser.add_argument("--lr", type=options.positive_float)
    args = parser.parse_args(argv)
    if args.plot:
        options.plot_folder(parser, args.plot)
"""

import argparse
import math
import os
import tempfile

import numpy as np

from fnnet._precision import check_near_one


def positive_int(text):
    """An int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {value}")
    return value


def positive_float(text):
    """A finite number > 0 (a learning rate)."""
    value = _number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def decay_factor(text):
    """A per-step learning-rate decay in (0, 1]; 1 means none. One too close to 1 for the
    float32 the runs keep it in is refused here, by fnnet's own rule."""
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a decay in (0, 1], got {text!r}")
    try:
        check_near_one("--decay", "decay", value, np.float32)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def _number(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def plot_folder(parser, folder):
    """Make `folder` (and its parents) and check that a file can be written in it, else
    exit with the parser's error naming it."""
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        parser.error(f"--plot {folder}: cannot write figures there ({error.strerror or error})")
