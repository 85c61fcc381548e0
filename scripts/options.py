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
    """A per-step learning-rate decay in (0, 1]; 1 means none. One float32 (where the runs
    keep it) cannot tell from 1 is refused here, as fnnet would refuse it."""
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a decay in (0, 1], got {text!r}")
    if value != 1 and float(np.float32(value)) == 1:
        raise argparse.ArgumentTypeError(
            f"expected a decay float32 keeps below 1, got {text!r}: it is 1 there"
        )
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
