"""The Python blocks of README.md and docs/api.md run as a newcomer would paste them: each
alone, in a fresh interpreter with two CPU devices (as the data-parallel section says to
start it)."""

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest
from helpers import child_xla_flags

README = pathlib.Path(__file__).parent.parent / "README.md"
API = README.parent / "docs" / "api.md"
# Blocks inside list items are indented: dedented, they run as pasted.
BLOCKS = [
    textwrap.dedent(block)
    for page in (README, API)
    for block in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
]

pytestmark = pytest.mark.slow  # every README block runs, some of them training

# Each block runs in its own namespace, all in one process (start-up is the slow part);
# a block that fails names itself.
RUNNER = """
import sys, traceback
blocks = sys.stdin.read().split("\\n#---block---\\n")
for i, block in enumerate(blocks):
    try:
        exec(compile(block, f"README block {i}", "exec"), {"__name__": "__main__"})
    except Exception:
        traceback.print_exc()
        sys.exit(f"README block {i} failed:\\n{block}")
print("ran", len(blocks), "blocks")
"""


def test_readme_has_the_blocks_we_run():
    assert len(BLOCKS) >= 4, len(BLOCKS)
    assert any("fnnet.check_vjp" in block for block in BLOCKS)
    assert any("mesh=mesh" in block for block in BLOCKS)
    assert any('optimizer("RMSProp"' in block for block in BLOCKS)


def test_every_readme_python_block_runs_alone():
    env = {**os.environ, "XLA_FLAGS": child_xla_flags(2), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input="\n#---block---\n".join(BLOCKS),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=README.parent,
    )
    assert done.returncode == 0, done.stderr[-4000:] + done.stdout[-2000:]
    assert f"ran {len(BLOCKS)} blocks" in done.stdout
    assert "2 devices, final loss" in done.stdout  # the data-parallel block saw both


if __name__ == "__main__":
    pytest.main([__file__])
