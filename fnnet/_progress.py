"""`fit`'s progress: a tqdm bar where one can be drawn (a terminal, a notebook), else plain
lines, one every so often (a log file, CI), never carriage returns."""

import sys
import time
from typing import Optional

_EVERY_SECONDS = 10.0  # plain lines: at most one this often, and one at the end


def _drawable() -> bool:
    """Whether a tqdm bar draws well here: stderr a terminal, or a Jupyter kernel."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


def _shown(values: dict) -> str:
    return ", ".join(f"{name} {value:.4g}" for name, value in values.items())


class Progress:
    """`update(epochs_done, values, stopped)` after each chunk, `close()` at the end;
    `values` the last epoch's recorded quantities by name (loss, val_loss, metrics)."""

    def __init__(self, epochs: int, done: int):
        self.epochs, self.start = epochs, time.perf_counter()
        self.bar = None
        self.last_line: Optional[float] = None
        self.pending = ""
        if _drawable():
            try:
                from tqdm.auto import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(total=epochs, initial=done, unit="epoch", desc="fit")
        self.done = done

    def update(self, done: int, values: dict, stopped: bool = False) -> None:
        """After a chunk: `done` epochs, the last one's `values`; `stopped` by early stopping."""
        shown = _shown(values) + (", stopped early" if stopped else "")
        if self.bar is not None:
            self.bar.update(done - self.done)
            self.bar.set_postfix_str(shown)
        else:
            now = time.perf_counter()
            self.pending = f"fit: epoch {done}/{self.epochs}, {shown}"
            if now - (self.start if self.last_line is None else self.last_line) >= _EVERY_SECONDS:
                self._print(now)
        self.done = done

    def _print(self, now: float) -> None:
        print(f"{self.pending} ({now - self.start:.1f} s)", file=sys.stderr, flush=True)
        self.last_line, self.pending = now, ""

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.pending:
            self._print(time.perf_counter())
