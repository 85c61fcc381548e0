"""scripts/benchmarks/fixed.py and fresh.py: the fixed-cost table's spans and its fresh processes."""

import bench
import pytest
from benchmarks.fresh import covered


def test_covered_counts_nested_and_overlapping_spans_once():
    assert covered([]) == 0
    assert covered([(0.0, 1.0), (2.0, 3.5)]) == pytest.approx(2.5)
    assert covered([(0.0, 4.0), (1.0, 2.0), (3.0, 5.0)]) == pytest.approx(5.0)  # nested, overlapping
    assert covered([(3.0, 5.0), (0.0, 1.0), (0.5, 1.5)]) == pytest.approx(3.5)  # in any order


@pytest.mark.slow  # two fresh processes, each importing jax and compiling its programs
def test_bench_quick_fixed_table_times_both_variants_and_a_new_lr_compiles_nothing(capsys):
    bench.main(["--quick", "--no-torch", "--only", "fixed"])
    out = capsys.readouterr().out
    assert "### Fixed costs" in out and "JAX's persistent compilation cache off" in out
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 15 and cells[0] == "BN-Dropout":
            rows[cells[1]] = cells
    assert set(rows) == {"fnnet fit", "plain jax.grad"}, out
    for cells in rows.values():
        trace, lower, compile_, run, first = (float(c) for c in cells[4:9])
        # five cells, each rounded to 3 decimals: the sum within 5 x 0.0005 of the whole
        assert min(trace, lower, compile_) > 0 and trace + lower + compile_ + run == pytest.approx(
            first, abs=2.6e-3
        )
        assert int(cells[9]) >= 1  # the first call compiled its program
        assert cells[10].endswith("(0)"), cells  # lr is data in both: no program compiled
        assert all(cell.endswith(")") for cell in cells[11:14])  # n, Dropout, epochs timed
    assert float(rows["fnnet fit"][3]) > 0 and rows["plain jax.grad"][3] == "-"  # import fnnet
    assert float(rows["fnnet fit"][14]) > 0  # compilation / plain
