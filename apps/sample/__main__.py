"""Sample from a checkpoint: ``uv run apps/sample --checkpoint RUN_OR_CHECKPOINT [--show-levels]``.

Ancestral sampling from the root down; ``--show-levels`` prints each level, coarse to fine.
"""

import sys

from tdlm_train.cli import sample_main

if __name__ == "__main__":
    sys.exit(sample_main(sys.argv[1:]))
