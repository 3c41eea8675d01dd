"""The precision mode names are defined once (smolrgpt/modeling/precision_modes.py): every command's --precision
offers exactly the modes apply_precision accepts, and the demo's settings check the same names."""
import argparse
import copy

import pytest

from smolrgpt.cli import build_parser
from smolrgpt.demo.config import load_demo_config
from smolrgpt.errors import ConfigError
from smolrgpt.modeling import precision
from smolrgpt.modeling.precision import apply_precision

COMMANDS_WITH_PRECISION = ("predict", "eval", "ask", "serve")


def _precision_choices(command: str) -> tuple[str, ...]:
    parser = build_parser(only=command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return tuple(next(a for a in sub._actions if "--precision" in a.option_strings).choices)


def _accepted_by_apply_precision(model, mode: str) -> bool:
    try:
        apply_precision(copy.deepcopy(model), mode, "cpu")
    except ValueError as exc:  # a known mode this CPU cannot run (bf16) is accepted, an unknown name is not
        return not str(exc).startswith("precision must be one of")
    return True


def test_every_command_offers_exactly_the_modes_apply_precision_accepts(tiny_model):
    choices = {command: _precision_choices(command) for command in COMMANDS_WITH_PRECISION}
    assert choices == {command: ("fp32", "fp16w", "int8", "bf16", "auto") for command in COMMANDS_WITH_PRECISION}
    assert set(choices["predict"]) == set(precision.PRECISIONS)  # the names resolve_precision checks
    assert all(_accepted_by_apply_precision(tiny_model, mode) for mode in choices["predict"])
    assert not _accepted_by_apply_precision(tiny_model, "fp16")  # the check itself can say no


def test_the_demo_accepts_the_same_names_and_lists_them_when_refusing():
    for mode in _precision_choices("eval"):
        assert load_demo_config(None, [f"eval.precision={mode}"]).eval.precision == mode
    with pytest.raises(ConfigError) as refused:
        load_demo_config(None, ["eval.precision=fp16"])
    assert str(refused.value) == "eval.precision: fp32, fp16w, int8, bf16 or auto"
