"""`python -m smolrgpt.cli ...` (what torchrun launches): the same as the `smolrgpt` command."""
import sys

from smolrgpt.cli import main

if __name__ == "__main__":
    sys.exit(main())
