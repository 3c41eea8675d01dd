"""The names of the inference precision modes that `modeling/precision.py` implements, and their help line."""
from __future__ import annotations

# Not in modeling/precision.py: importing anything under smolrgpt.modeling runs modeling/__init__.py, which
# builds the model classes with torch, and the command line lists these names without importing torch.
PRECISIONS = ("fp32", "fp16w", "int8", "bf16", "auto")  # the order `--help` and argparse's choice errors show
PRECISION_HELP = ("fp32, fp16w or int8 (fp16 / int8 weights, fp32 math; CPU), bf16 (GPU), or auto: the fastest "
                  "mode the accuracy gate found to keep fp32's answers (docs/performance.md)")
