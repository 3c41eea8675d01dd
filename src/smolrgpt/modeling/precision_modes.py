"""The names of the inference precision modes that `modeling/precision.py` implements, and their help line."""
from __future__ import annotations

# Apart from precision.py, which imports torch: the command line lists these names without importing it.
PRECISIONS = ("fp32", "fp16w", "int8", "bf16", "auto")  # the order `--help` and argparse's choice errors show
PRECISION_HELP = ("fp32, fp16w or int8 (fp16 / int8 weights, fp32 math; CPU), bf16 (GPU), or auto: the fastest "
                  "mode the accuracy gate found to keep fp32's answers (docs/performance.md)")
