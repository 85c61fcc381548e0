"""The scripts' persistent compilation cache: a second run compiles nothing, bad folders and
entries cost a warning, never a run."""

import os
import subprocess
import sys

import compile_cache
import jax
import pytest

DISK = os.path.join(os.path.dirname(__file__), "..", "scripts", "disk.py")
SHORT = ["--models", "tanh_mse", "--seeds", "1", "--epochs", "20", "--evaluations", "2"]


def run_disk(cache_dir, *flags):
    """disk.py's short run in a fresh process, the cache in `cache_dir`: (stdout lines, stderr)."""
    env = dict(os.environ, FNNET_CACHE_DIR=str(cache_dir))
    del env["FNNET_NO_CACHE"]  # conftest turns the cache off for everything else
    done = subprocess.run(
        [sys.executable, DISK, *SHORT, *flags],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
    )
    return done.stdout.strip().splitlines(), done.stderr


def compilation(lines):
    """The `compilation ... s (...)` part of the closing time line."""
    assert lines[-1].startswith("time: "), lines
    return lines[-1].split(", ")[1]


@pytest.mark.slow
def test_disk_second_run_loads_every_program_from_the_cache_and_recompiles_corrupt_entries(tmp_path):
    first, _ = run_disk(tmp_path)
    assert "cached" not in first[-1]
    assert os.listdir(tmp_path)  # the small programs too: no 1 s threshold
    second, _ = run_disk(tmp_path)
    assert compilation(second).endswith(" s (cached)"), second[-1]
    assert second[:-1] == first[:-1]  # the same results
    for name in os.listdir(tmp_path):
        if name.endswith("-cache"):
            data = (tmp_path / name).read_bytes()
            (tmp_path / name).write_bytes(data[: len(data) // 2])
    again, err = run_disk(tmp_path)
    assert again[:-1] == first[:-1]
    assert "cached" not in again[-1]  # every program compiled afresh
    assert "Error reading persistent compilation cache entry" in err  # jax's own warning


@pytest.mark.slow
def test_disk_runs_uncached_with_one_warning_when_the_folder_cannot_be_written(tmp_path):
    (tmp_path / "file").write_text("")
    lines, err = run_disk(tmp_path / "file" / "jax")
    assert err.count("compilation cache off for this run: cannot write to") == 1, err
    assert "Error writing persistent compilation cache" not in err
    assert lines[-1].startswith("time: ") and "cached" not in lines[-1]


@pytest.mark.parametrize("where", ["under a file", "read-only folder"])
def test_enable_warns_and_leaves_the_cache_off_where_it_cannot_write(tmp_path, monkeypatch, where):
    if where == "under a file":
        (tmp_path / "file").write_text("")
        path = tmp_path / "file" / "jax"
    else:
        path = tmp_path / "read-only"
        path.mkdir()
        path.chmod(0o555)
        if os.access(path, os.W_OK):
            pytest.skip("this user (root) writes to read-only folders")
    monkeypatch.delenv("FNNET_NO_CACHE")
    monkeypatch.setenv("FNNET_CACHE_DIR", str(path))
    before = jax.config.jax_compilation_cache_dir
    with pytest.warns(RuntimeWarning, match=f"compilation cache off for this run: cannot write to {path}"):
        assert compile_cache.enable() is None
    assert jax.config.jax_compilation_cache_dir == before


def test_folder_and_switches(monkeypatch):
    monkeypatch.delenv("FNNET_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/x")
    assert compile_cache.folder() == os.path.join("/x", "fnnet", "jax")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", "/home/u")
    assert compile_cache.folder() == os.path.join("/home/u", ".cache", "fnnet", "jax")
    monkeypatch.setenv("FNNET_CACHE_DIR", "/y")
    assert compile_cache.folder() == "/y"
    before = jax.config.jax_compilation_cache_dir
    assert compile_cache.enable() is None  # FNNET_NO_CACHE=1, from conftest
    monkeypatch.setenv("FNNET_NO_CACHE", "0")
    assert compile_cache.enable(no_cache=True) is None
    assert jax.config.jax_compilation_cache_dir == before


def test_compiles_counts_programs_and_cache_hits():
    with compile_cache.Compiles() as compiles:
        jax.jit(lambda x: x * 3.0 + 1.0)(2.0)
    assert compiles.programs >= 1 and compiles.summary() == ""  # the cache is off here
    compiles.cached = compiles.programs
    assert compiles.summary() == "cached"
    compiles.programs, compiles.cached = 4, 1
    assert compiles.summary() == "1 of 4 programs cached"
