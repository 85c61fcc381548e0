"""fnnet.save / fnnet.load: exact round trips, and every bad file refused with a ValueError."""

import io
import json
import os
import pathlib
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
import fnnet.checkpoint
from helpers import assert_trees_equal

METADATA = {
    "epochs_done": 7,
    "losses": [0.5, 0.25, 1e-300],
    "name": "run-α",
    "nested": {"a": None},
    "flag": True,
}


def assert_loaded(got, want):
    """What `load` gave: jax arrays, and `want` in structure, dtypes, shapes and bits."""
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(got))
    assert_trees_equal(got, want)


def linear(rng, n_in, n_out, dtype=jnp.float32):
    """Params of fnnet.Linear(n_in, n_out), random."""
    return {
        "w": jnp.asarray(rng.normal(size=(n_in, n_out)), dtype),
        "b": jnp.asarray(rng.normal(size=(n_out,)), dtype),
    }


def make_state(seed=0, hidden=3):
    """Params of serial(Linear(2, hidden), Tanh(), Linear(hidden, 1), Sigmoid()) plus a float64
    leaf, and an Adam state after one step (non-zero slots, count 1)."""
    rng = np.random.default_rng(seed)
    params = (
        linear(rng, 2, hidden),
        (),
        linear(rng, hidden, 1),
        (),
        {"scale": jnp.asarray([1.5, -2.0], jnp.float64)},
    )
    opt = fnnet.Adam(lr=0.1, decay=0.9)
    _, state = jax.jit(opt.step)(params, params, opt.init(params))
    return params, state


@pytest.fixture
def saved(tmp_path):
    """A checkpoint on disk: (path, params, opt_state)."""
    params, state = make_state()
    path = tmp_path / "run.npz"
    fnnet.save(path, params, state, metadata=METADATA)
    return path, params, state


def test_round_trip_is_exact(saved):
    path, params, state = saved
    got_params, got_state, metadata = fnnet.load(path, *make_state(seed=1))
    assert_loaded(got_params, params)
    assert_loaded(got_state, state)
    assert isinstance(got_state, fnnet.OptState)
    assert got_state.count.dtype == jnp.int32 and int(got_state.count) == 1
    assert metadata == METADATA


def test_round_trip_without_opt_state_and_metadata(tmp_path):
    params, state = make_state()
    path = str(tmp_path / "params-only.npz")  # a str path works as well as a Path
    fnnet.save(path, params)
    got_params, got_state, metadata = fnnet.load(path, params)
    assert_loaded(got_params, params)
    assert got_state is None and metadata is None
    with pytest.raises(ValueError, match=r"holds no optimizer state, but opt_state asks for one"):
        fnnet.load(path, params, state)


def test_params_only_load_from_a_full_checkpoint(saved):
    path, params, _ = saved
    got_params, got_state, _ = fnnet.load(path, params)
    assert_loaded(got_params, params)
    assert got_state is None


def test_no_suffix_is_added(tmp_path):
    params, state = make_state()
    fnnet.save(tmp_path / "checkpoint", params, state)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]
    assert_loaded(fnnet.load(tmp_path / "checkpoint", params, state)[0], params)


def test_overwrite_replaces(saved):
    path, params, state = saved
    new_params = jax.tree.map(lambda p: p + 1, params)
    fnnet.save(path, new_params, state, metadata={"v": 2})
    got_params, _, metadata = fnnet.load(path, params, state)
    assert_loaded(got_params, new_params)
    assert metadata == {"v": 2}


def test_like_of_another_model_raises(saved):
    path, params, state = saved
    other = (*params[:4], linear(np.random.default_rng(1), 1, 1))  # a last layer of another kind
    with pytest.raises(
        ValueError,
        match=r"has no entry \"params\[4\]\['b'\]\": it was saved from "
        r"another model or optimizer",
    ):
        fnnet.load(path, other)
    with pytest.raises(
        ValueError,
        match=r"has entries \[.*\"params\[4\]\['scale'\]\"\] that the "
        r"templates do not",
    ):
        fnnet.load(path, params[:4])  # fewer leaves than saved
    sgd_state = fnnet.SGD(lr=0.1).init(params)  # another optimizer
    with pytest.raises(ValueError, match=r"has no entry \"opt_state\.hyperparams\['momentum'\]\""):
        fnnet.load(path, params, sgd_state)


def test_wrong_shape_or_dtype_raises(saved):
    path, params, state = saved
    wider, _ = make_state(hidden=4)
    with pytest.raises(
        ValueError,
        match=r"entry \"params\[0\]\['b'\]\" is float32\[3\], "
        r"expected float32\[4\]",
    ):
        fnnet.load(path, wider)
    as_float64 = jax.tree.map(lambda p: p.astype(jnp.float64), params)
    with pytest.raises(
        ValueError,
        match=r"entry \"params\[0\]\['b'\]\" is float32\[3\], "
        r"expected float64\[3\]",
    ):
        fnnet.load(path, as_float64)


@pytest.mark.parametrize("keep", [0, 1, 10, 100, 0.5, -100, -22, -1])
def test_truncated_file_raises(saved, keep):
    path, params, state = saved
    data = path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    path.write_bytes(data[:cut])
    with pytest.raises(
        ValueError,
        match=r"is not a readable fnnet checkpoint \(truncated, corrupt "
        r"or not an \.npz\)",
    ):
        fnnet.load(path, params, state)


def test_random_bytes_raise(tmp_path):
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match=r"is not a readable fnnet checkpoint"):
        fnnet.load(path, *make_state())


def test_corrupt_zip_field_raises(saved):
    """A bit flip in the zip directory (here the compression method of the first entry)."""
    path, params, state = saved
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")  # the first central directory entry
    data[entry + 10] = 99  # its compression method; 99 is unsupported
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"is not a readable fnnet checkpoint"):
        fnnet.load(path, params, state)


def test_npy_file_raises(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(
        ValueError,
        match=r"is not a readable fnnet checkpoint .*one float64\[3\] "
        r"array",
    ):
        fnnet.load(path, *make_state())


def test_npz_without_header_raises(tmp_path):
    params, state = make_state()
    path = tmp_path / "plain.npz"
    np.savez(path, **fnnet.checkpoint._flatten("params", params))
    with pytest.raises(
        ValueError,
        match=r"is an \.npz file but not an fnnet checkpoint "
        r"\(no '__fnnet__' entry\)",
    ):
        fnnet.load(path, params)


@pytest.mark.parametrize(
    "header, match",
    [
        ("{not json", r"has a corrupt header"),
        (json.dumps({"format": 3, "metadata": None}), r"has format 3, expected 1 or 2"),
        (json.dumps({"metadata": None}), r"has format None, expected 1"),
        ("5", r"has a corrupt header: 5 is not a JSON object"),
        ("[1, 2]", r"has a corrupt header: \[1, 2\] is not a JSON object"),
    ],
)
def test_bad_header_raises(tmp_path, header, match):
    path = tmp_path / "bad-header.npz"
    np.savez(path, __fnnet__=np.array(header))
    with pytest.raises(ValueError, match=match):
        fnnet.load(path, *make_state())


UNPICKLED = []


def _record_unpickling(tag):
    UNPICKLED.append(tag)
    return tag


class Payload:
    """Unpickling this runs `_record_unpickling`: the test sees whether load ran it."""

    def __init__(self, tag):
        self.tag = tag

    def __reduce__(self):
        return _record_unpickling, (self.tag,)


@pytest.mark.parametrize("where", ["header", "entry"])
def test_pickled_objects_are_never_unpickled(tmp_path, where):
    params, state = make_state()
    arrays = {
        **fnnet.checkpoint._flatten("params", params),
        "__fnnet__": np.array(json.dumps({"format": 1, "metadata": None})),
    }
    if where == "header":
        arrays["__fnnet__"] = np.array(Payload("header"), dtype=object)
    else:
        arrays["params[0]['w']"] = np.array([Payload("entry")], dtype=object)
    path = tmp_path / "pickled.npz"
    np.savez(path, **arrays)
    UNPICKLED.clear()
    with pytest.raises(ValueError, match=r"is not a readable fnnet checkpoint"):
        fnnet.load(path, params)
    assert UNPICKLED == []
    # The payload is live: a loader that allowed pickles would have run it.
    with np.load(path, allow_pickle=True) as archive:
        for name in archive.files:
            archive[name]
    assert UNPICKLED == [where]


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"load: checkpoint .*nowhere\.npz' does not exist"):
        fnnet.load(tmp_path / "nowhere.npz", *make_state())


def test_params_that_are_a_tuple_load_alone_or_with_their_state(saved):
    """A serial's params are a tuple: load takes them as the params, never as a pair."""
    path, params, state = saved
    assert isinstance(params, tuple)
    got, got_state, _ = fnnet.load(path, params)
    assert got_state is None
    assert_loaded(got, params)
    got, got_state, _ = fnnet.load(path, params, state)
    assert_loaded(got_state, state)


def test_metadata_must_be_json(tmp_path):
    params, _ = make_state()
    with pytest.raises(TypeError, match=r"save: metadata must be JSON-serializable"):
        fnnet.save(tmp_path / "x.npz", params, metadata={"array": np.zeros(2)})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "error", [OSError("No space left on device"), KeyboardInterrupt()], ids=["OSError", "KeyboardInterrupt"]
)
def test_failed_write_keeps_previous_checkpoint(saved, monkeypatch, error):
    """A write that dies half-way leaves the old file intact and no temporary file behind."""
    path, params, state = saved
    before = path.read_bytes()
    real_savez = np.savez

    def savez_then_fail(file, **arrays):
        real_savez(file, **arrays)
        file.truncate(file.tell() // 2)  # half a file on disk, as at a full disk
        raise error

    monkeypatch.setattr(fnnet.checkpoint.np, "savez", savez_then_fail)
    new_params = jax.tree.map(lambda p: p + 1, params)
    with pytest.raises(type(error)):
        fnnet.save(path, new_params, state, metadata={"v": 2})
    monkeypatch.undo()

    assert sorted(os.listdir(path.parent)) == [path.name]  # no temporary file left
    assert path.read_bytes() == before
    got_params, got_state, metadata = fnnet.load(path, params, state)
    assert_loaded(got_params, params)
    assert_loaded(got_state, state)
    assert metadata == METADATA


def test_pathlike_paths(tmp_path):
    params, state = make_state()
    path = pathlib.PurePath(tmp_path / "p.npz")
    fnnet.save(path, params, state)
    assert_loaded(fnnet.load(path, params, state)[1], state)


# Dtypes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype", [jnp.bfloat16, jnp.float16, jnp.float8_e4m3fn], ids=["bfloat16", "float16", "float8_e4m3fn"]
)
def test_low_precision_round_trips(tmp_path, dtype):
    """bfloat16 and float8, which NumPy cannot store, are stored as their bits."""
    params = {"w": jnp.asarray([[0.5, -3.25, 1e-3]], dtype), "b": jnp.asarray([7.0], dtype)}
    opt = fnnet.SGD(lr=0.1, momentum=0.5)
    path = tmp_path / "low.npz"
    fnnet.save(path, params, opt.init(params))
    got_params, got_state, _ = fnnet.load(path, params, opt.init(params))
    assert_loaded(got_params, params)
    assert got_state.hyperparams["lr"].dtype == jnp.float32  # optimizer arithmetic: >= float32
    as_float32 = jax.tree.map(lambda p: p.astype(jnp.float32), params)
    with pytest.raises(
        ValueError,
        match=rf"entry \"params\['b'\]\" is {jnp.dtype(dtype).name}\[1\], "
        r"expected float32\[1\]",
    ):
        fnnet.load(path, as_float32)


def test_format_1_files_still_load(tmp_path):
    params, _ = make_state()
    path = tmp_path / "old.npz"
    arrays = {
        **fnnet.checkpoint._flatten("params", params),
        "__fnnet__": np.array(json.dumps({"format": 1, "metadata": {"v": 1}, "has_opt_state": False})),
    }
    np.savez(path, **arrays)
    got, _, metadata = fnnet.load(path, params)
    assert_loaded(got, params)
    assert metadata == {"v": 1}


@pytest.mark.parametrize(
    "leaf, match",
    [
        ("abc", r"save: params\['name'\] must be an array or a number, got str 'abc'"),
        (object(), r"save: params\['name'\] must be an array or a number, got object"),
        (np.array(["a", "b"]), r"save: params\['name'\] must be a numeric array, got dtype <U1"),
        (np.array([None], dtype=object), r"save: params\['name'\] must be a numeric array, got dtype object"),
    ],
    ids=["str", "object", "str-array", "object-array"],
)
def test_a_leaf_that_is_not_an_array_is_refused(tmp_path, leaf, match):
    with pytest.raises(TypeError, match=match):
        fnnet.save(tmp_path / "x.npz", {"w": jnp.zeros(2), "name": leaf})
    assert os.listdir(tmp_path) == []


def _npy_claiming(descr, shape, data=b"\0" * 8):
    """The bytes of an .npy entry whose header claims `descr` and `shape`, with `data` only."""
    entry = io.BytesIO()
    np.lib.format.write_array_header_1_0(entry, {"descr": descr, "fortran_order": False, "shape": shape})
    return entry.getvalue() + data


def _replace_entry(path, name, data):
    with zipfile.ZipFile(path) as source:
        entries = {info.filename: source.read(info) for info in source.infolist()}
    entries[name + ".npy"] = data
    with zipfile.ZipFile(path, "w") as target:
        for filename, content in entries.items():
            target.writestr(filename, content)


@pytest.mark.parametrize(
    "name, entry, match",
    [
        (
            "params[0]['b']",
            _npy_claiming("<f4", (10**12,)),
            r"entry \"params\[0\]\['b'\]\" is float32\[1000000000000\], expected float32\[3\]",
        ),
        (
            "params[0]['b']",
            _npy_claiming("<f4", (3,), data=b""),
            (
                r"not a readable fnnet checkpoint .*entry \"params\[0\]\['b'\]\" claims float32\[3\], "
                r"more than the file holds"
            ),
        ),
        (
            "__fnnet__",
            _npy_claiming("<U100000000", ()),
            r"not a readable fnnet checkpoint .*entry '__fnnet__' claims <U100000000\[\], more than",
        ),
    ],
    ids=["params-entry", "short-entry", "header-entry"],
)
def test_a_header_claiming_a_huge_shape_allocates_nothing(saved, monkeypatch, name, entry, match):
    """An entry whose .npy header claims 10**12 values is refused from its header, before
    its data is read: compared with like, and with the size of the file."""
    path, params, state = saved
    _replace_entry(path, name, entry)
    real_read_array = np.lib.format.read_array

    def read_array(file, *args, **kwargs):
        if file.name == name + ".npy":
            pytest.fail("load read the data of a lying entry")
        return real_read_array(file, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "read_array", read_array)
    with pytest.raises(ValueError, match=match):
        fnnet.load(path, params, state)


def test_save_errors_name_the_checkpoint(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"save: cannot write checkpoint "
        r"'[^']*missing/run\.npz': No such file",
    ):
        fnnet.save(tmp_path / "missing" / "run.npz", {"w": jnp.zeros(2)})


# Temporary files ---------------------------------------------------------------------------


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_save_removes_the_temporaries_dead_processes_left_of_it(saved):
    """A SIGKILL mid-save leaves `.run.npz.fnnet-PID-XXXX.tmp`: the next save of run.npz removes
    those of dead processes, and leaves a live writer's, other checkpoints' and other files."""
    path, params, state = saved
    folder = path.parent
    dead, alive = _dead_pid(), os.getppid()
    stale = [f".run.npz.fnnet-{dead}-abc_12.tmp", f".run.npz.fnnet-{dead}-x9.tmp"]
    kept = [
        f".run.npz.fnnet-{alive}-abc.tmp",
        f".other.npz.fnnet-{dead}-abc.tmp",
        ".fnnet-abc.tmp",
        f".run.npz.fnnet-{dead}-abc.tmp.keep",
        "notes.txt",
    ]
    for name in stale + kept:
        (folder / name).write_bytes(b"\0" * 1000)
    fnnet.save(path, params, state)
    assert sorted(os.listdir(folder)) == sorted(kept + [path.name])


def test_save_refuses_params_a_train_step_donated(tmp_path):
    model = fnnet.Sequential(fnnet.Linear(2, 1))
    params = model.init(jax.random.key(0), (4, 2))[1]
    opt = fnnet.SGD(lr=0.1)
    step = fnnet.train_step(model, fnnet.LossMSE(), opt)
    state = opt.init(params)
    step(params, state, jnp.ones((4, 2)), jnp.ones((4, 1)))
    with pytest.raises(ValueError, match=r"save: params or opt_state hold arrays that were donated"):
        fnnet.save(tmp_path / "run.npz", params)
    assert not list(tmp_path.iterdir())


def test_64_bit_leaves_keep_their_bits_without_x64(tmp_path):
    """Without x64 JAX holds 64-bit arrays in 32 bits: those leaves come back as NumPy
    arrays of the template's dtype, every bit kept (not 0.1, 0, inf and 3 for 2**40 + 3)."""
    path = tmp_path / "wide.npz"
    tree = {
        "f": np.array([0.1, 1e-50, 1e300]),
        "i": np.array([2**40 + 3, -1]),
        "u": np.array([2**63], np.uint64),
        "g": np.array([0.5, 2.0], np.float32),
    }
    fnnet.save(path, tree)
    with jax.enable_x64(False):
        got = fnnet.load(path, tree)[0]
    for name, want in tree.items():
        assert got[name].dtype == want.dtype, name
        np.testing.assert_array_equal(np.asarray(got[name]), want, err_msg=name)


def test_load_best_refuses_the_template_of_a_smaller_model(tmp_path):
    x, y = fnnet.data.disk(jax.random.key(1), 40)
    model = fnnet.Sequential(fnnet.Linear(2, 8), fnnet.ReLU(), fnnet.Linear(8, 1), fnnet.Sigmoid())
    params = model.init(jax.random.key(0), x.shape)[1]
    path = tmp_path / "run.npz"
    run = fnnet.fit(
        model,
        fnnet.LossBCE(),
        fnnet.Adam(1e-2),
        params,
        x,
        y,
        4,
        early_stopping=fnnet.EarlyStopping("loss", patience=10),
        checkpoint=path,
        progress=False,
    )
    assert_trees_equal(fnnet.load_best(path, params), run.params)
    with pytest.raises(ValueError, match=r"load_best: .* has entries \[.*\] that the template does not"):
        fnnet.load_best(path, params[:1])


@pytest.mark.parametrize("name", ["", "run.npz/"])
def test_a_checkpoint_path_that_names_no_file_is_refused_before_training(tmp_path, name):
    x, y = fnnet.data.disk(jax.random.key(1), 16)
    model = fnnet.Sequential(fnnet.Linear(2, 1), fnnet.Sigmoid())
    params = model.init(jax.random.key(0), x.shape)[1]
    path = "" if not name else str(tmp_path / "run.npz") + os.sep
    with pytest.raises(IsADirectoryError, match=r"fit: checkpoint .* is a folder, not a file's path"):
        fnnet.fit(model, fnnet.LossBCE(), fnnet.SGD(0.1), params, x, y, 2, checkpoint=path, progress=False)


def test_deeply_nested_metadata_and_headers_are_refused_by_kind(tmp_path):
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(TypeError, match="save: metadata must be JSON-serializable"):
        fnnet.save(tmp_path / "deep.npz", {"w": np.ones(2)}, metadata={"deep": deep})
    path = tmp_path / "header.npz"
    np.savez(path, **{fnnet.checkpoint._HEADER: np.array("[" * 100_000 + "]" * 100_000)})
    with pytest.raises(ValueError, match="has a corrupt header"):
        fnnet.load(path, {"w": np.ones(2)})


def test_paths_that_are_not_a_files_are_named(tmp_path):
    tree = {"w": np.ones(2)}
    with pytest.raises(TypeError, match=r"save: path must be a str or os.PathLike of one"):
        fnnet.save(b"run.npz", tree)
    with pytest.raises(IsADirectoryError, match=r"load: checkpoint .* is a folder, not a file"):
        fnnet.load(tmp_path, tree)
    with pytest.raises(IsADirectoryError, match=r"load_best: checkpoint .* is a folder, not a file"):
        fnnet.load_best(tmp_path, tree)
