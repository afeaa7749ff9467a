"""Evaluate a checkpoint: ``uv run apps/eval --checkpoint RUN_OR_CHECKPOINT [--data.source ...]``.

Prints the validation NELBO per level, perplexity and bits per byte; ``--help`` lists options.
"""

import sys

from tdlm_train.cli import eval_main

if __name__ == "__main__":
    sys.exit(eval_main(sys.argv[1:]))
