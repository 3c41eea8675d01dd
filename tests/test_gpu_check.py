"""benchmarks/gpu_check.py --dry-run: the GPU check's code paths rehearsed on the CPU (tiny preset, gloo).
The timings it prints are measurements, not asserted; what is asserted is that every section runs and
reports, that the fast mode keeps the tiny model's answers, and that a killed DDP run resumes to the
same losses."""
import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", BENCHMARKS / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_dry_run_inference_and_agreement(capsys):
    assert _gpu_check().main(["--dry-run", "--skip", "training,ddp"]) == 0
    inference, agreement, summary = _json_lines(capsys.readouterr().out)
    assert inference["section"] == "inference" and inference["precision"] == "fp16w"
    assert inference["question_latency_s"] > 0 and inference["eval_questions_per_s"] > 0
    assert inference["decode_tokens_per_s"] > 0
    assert agreement == {"section": "agreement", "on": "random weights", "mode": "fp16w", "questions": 8,
                         "identical_text": 1.0}
    assert summary["benchmark"] == "gpu_check" and summary["sections"] == ["inference", "agreement"]


@pytest.mark.slow
def test_dry_run_training_and_ddp_resume(capsys):
    assert _gpu_check().main(["--dry-run", "--skip", "inference,agreement"]) == 0
    *steps, ddp, summary = _json_lines(capsys.readouterr().out)
    assert [s["gradient_checkpointing"] for s in steps] == [False, True]
    assert all(s["batch"] == 14 and s["samples_per_s"] > 0 for s in steps)
    assert ddp["backend"] == "gloo" and ddp["processes"] == 2 and ddp["steps"] == 6
    assert 3 <= ddp["killed_at_step"] < 6 and ddp["resumed_identical"] is True


def test_gpu_check_refuses_a_machine_without_a_gpu(monkeypatch):
    module = _gpu_check()
    monkeypatch.setattr(module.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device: run with --dry-run"):
        module.main([])
