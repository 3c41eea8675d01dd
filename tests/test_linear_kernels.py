"""benchmarks/linear_kernels.py on tiny shapes: every kernel of the precision modes runs and reports
(the timings are measurements, not asserted)."""
import importlib.util
import json
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_every_kernel_reports_each_shape_and_row_count(capsys):
    spec = importlib.util.spec_from_file_location("linear_kernels", BENCHMARKS / "linear_kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ms_per_call.__defaults__ = (0.001,)  # a few calls each: this checks the paths, not the speed
    assert module.main(["--rows", "1", "3", "--shapes", "16x8", "4x12"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["benchmark"] == "linear_kernels"
    assert [(r["shape"], r["rows"]) for r in result["results"]] == [("16x8", 1), ("16x8", 3), ("4x12", 1), ("4x12", 3)]
    for row in result["results"]:
        assert set(row) == {"shape", "rows", *module.KINDS}
        assert all(row[k] is None or row[k]["ms"] > 0 for k in module.KINDS)
        assert row["F.linear"] is not None and row["int8"] is not None and row["bf16"] is not None
