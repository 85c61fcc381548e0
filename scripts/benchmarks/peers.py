"""The peers outside JAX: PyTorch eager and scikit-learn's MLPClassifier, each in its own process.

Run inside the JAX process, PyTorch's eager loop was ~40x slower (JAX's thread
pools compete for the cores), so each peer runs in a fresh Python process that
never imports JAX: this file, run as a script, prepares and warms up its task,
then answers each "run" line on its standard input with one timed run. The
caller interleaves those runs with its own:

    with Peer("mlp_torch", arrays, epochs=100, batch_size=32, lr=1e-3) as peer:
        seconds, accuracy = peer.run()

`arrays` holds the data and, for PyTorch, the fnnet model's initial params
`p0, p1, ...` (so every variant starts from the same point).
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


class Peer:
    """A peer's process: `info` (e.g. its thread count) once warmed up; `run()` times one run."""

    def __init__(self, task: str, arrays: dict, **options):
        self._folder = tempfile.TemporaryDirectory()
        path = os.path.join(self._folder.name, "arrays.npz")
        np.savez(path, **{name: np.asarray(a) for name, a in arrays.items()})
        self.task = task
        self._process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), task, path, json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info = self._answer()

    def _answer(self) -> dict:
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(
                f"the {self.task} peer exited with status {self._process.wait()} (its error is above)"
            )
        return json.loads(line)

    def run(self):
        """(seconds, test or train accuracy) of one run, timed in the peer's process."""
        self._process.stdin.write("run\n")
        self._process.stdin.flush()
        answer = self._answer()
        return answer["seconds"], answer["accuracy"]

    def close(self):
        self._process.stdin.close()  # the peer's loop ends, and so does its process
        self._process.wait()
        self._process.stdout.close()
        self._folder.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- in the peer's process ----------------------------------------------------------------


def _faster_threads(default, set_threads, run_short):
    """Set the library's default thread count or one thread, whichever runs `run_short`
    faster (one thread wins on small products, and by far on a loaded machine); returns it."""
    seconds = {}
    for threads in sorted({default, 1}, reverse=True):
        set_threads(threads)
        run_short()
        start = time.perf_counter()
        run_short()
        seconds[threads] = time.perf_counter() - start
    best = min(seconds, key=seconds.get)
    set_threads(best)
    return best


def _params(torch, arrays):
    count = 0
    while f"p{count}" in arrays:
        count += 1
    return [torch.tensor(arrays[f"p{i}"]) for i in range(count)]


def w1_torch(arrays, epochs, lr, decay):
    """W1 as the report wrote it: full-batch SGD, the backward written by hand, no autograd."""
    import torch

    initial = _params(torch, arrays)
    x, y = torch.tensor(arrays["x"]), torch.tensor(arrays["y"])

    def run(epochs=epochs):
        ws, bs = [p.clone() for p in initial[::2]], [p.clone() for p in initial[1::2]]
        with torch.no_grad():
            for epoch in range(epochs):
                inputs, h = [], x
                for i, (w, b) in enumerate(zip(ws, bs)):
                    inputs.append(h)
                    z = h @ w + b
                    h = torch.relu(z) if i < len(ws) - 1 else torch.sigmoid(z)
                dz = (h.clamp(1e-7, 1 - 1e-7) - y) / y.numel()  # BCE after Sigmoid
                step = lr * decay**epoch
                for i in reversed(range(len(ws))):
                    dw, db = inputs[i].T @ dz, dz.sum(0)
                    if i:
                        dz = (dz @ ws[i].T) * (inputs[i] > 0)
                    ws[i] -= step * dw
                    bs[i] -= step * db
        return float(((h > 0.5) == (y > 0.5)).float().mean())  # train accuracy

    threads = _faster_threads(torch.get_num_threads(), torch.set_num_threads, lambda: run(min(epochs, 200)))
    return run, {"threads": threads}


def _classifier_torch(arrays, epochs, batch_size, lr, forward, images):
    """Minibatch Adam under softmax cross-entropy with autograd, as a user writes it: each
    epoch a fresh permutation, the last batch smaller when batch_size does not divide n."""
    import torch
    import torch.nn.functional as F

    initial = _params(torch, arrays)
    if images:  # NHWC -> NCHW, HWIO kernels -> OIHW
        initial = [p.permute(3, 2, 0, 1).contiguous() if p.ndim == 4 else p for p in initial]
    x, x_test = (torch.tensor(arrays[name]) for name in ("x_train", "x_test"))
    if images:
        x, x_test = (a.permute(0, 3, 1, 2).contiguous() for a in (x, x_test))
    y, y_test = (torch.tensor(arrays[name]).long() for name in ("y_train", "y_test"))
    n = len(y)

    def run(epochs=epochs):
        params = [p.clone().requires_grad_() for p in initial]
        opt = torch.optim.Adam(params, lr=lr)
        generator = torch.Generator().manual_seed(0)
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                batch = order[start : start + batch_size]
                loss = F.cross_entropy(forward(params, x[batch]), y[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            return float((forward(params, x_test).argmax(1) == y_test).float().mean())

    threads = _faster_threads(torch.get_num_threads(), torch.set_num_threads, lambda: run(1))
    return run, {"threads": threads}


def mlp_torch(arrays, epochs, batch_size, lr):
    """W4's MLP: ReLU between the Linear layers `p0 @ x + p1, ...`, logits out."""
    import torch

    def forward(params, h):
        for i in range(0, len(params), 2):
            h = h @ params[i] + params[i + 1]
            h = torch.relu(h) if i < len(params) - 2 else h
        return h

    return _classifier_torch(arrays, epochs, batch_size, lr, forward, images=False)


def cnn_torch(arrays, epochs, batch_size, lr):
    """W5's CNN: two (3x3 convolution padded to the same size, ReLU, 2x2 max pool) blocks, then
    Linear on the features flattened in NHWC order (as fnnet's Flatten)."""
    import torch
    import torch.nn.functional as F

    def forward(params, h):
        k1, c1, k2, c2, w, b = params
        for k, c in ((k1, c1), (k2, c2)):
            h = F.max_pool2d(torch.relu(F.conv2d(h, k, c, padding=1)), 2)
        return h.permute(0, 2, 3, 1).reshape(h.shape[0], -1) @ w + b

    return _classifier_torch(arrays, epochs, batch_size, lr, forward, images=True)


def mlp_sklearn(arrays, epochs, batch_size, lr, hidden):
    """scikit-learn's MLPClassifier with Adam for exactly `epochs` epochs (no early stop), with
    its own initialization; its BLAS on the default thread count or one thread, the faster."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_info, threadpool_limits

    def run(epochs=epochs):
        model = MLPClassifier(
            hidden_layer_sizes=tuple(hidden),
            solver="adam",
            batch_size=batch_size,
            learning_rate_init=lr,
            max_iter=epochs,
            tol=0,
            n_iter_no_change=100000,
            random_state=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # it ran the epochs it was told to
            model.fit(arrays["x_train"], arrays["y_train"])
        if model.n_iter_ != epochs:
            raise RuntimeError(f"MLPClassifier stopped after {model.n_iter_} of {epochs} epochs")
        return float(model.score(arrays["x_test"], arrays["y_test"]))

    default = max((pool["num_threads"] for pool in threadpool_info()), default=1)
    return run, {"threads": _faster_threads(default, threadpool_limits, lambda: run(1))}


TASKS = {"w1_torch": w1_torch, "mlp_torch": mlp_torch, "cnn_torch": cnn_torch, "mlp_sklearn": mlp_sklearn}


def serve(task, path, options):
    """Prepare `task`, say so with its info, then answer each line of input with one timed run."""
    answers, sys.stdout = sys.stdout, sys.stderr  # anything else printed goes to stderr
    arrays = dict(np.load(path))
    run, info = TASKS[task](arrays, **options)
    print(json.dumps(info), file=answers, flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        accuracy = run()
        print(
            json.dumps({"seconds": time.perf_counter() - start, "accuracy": accuracy}),
            file=answers,
            flush=True,
        )


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
