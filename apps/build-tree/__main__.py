"""Build a TDLM vocabulary tree: ``uv run apps/build-tree --tokens ids.npy --out tree.npz``.

A thin wrapper over the ``tdlm-tree build`` command (see ``--help``); ``info`` is available as
``uv run tdlm-tree info tree.npz``. Ctrl-C stops it within about a second, like every app (the
tree is written atomically, so nothing half-written is left).
"""

import sys

from tdlm_train.cli import prompt_stop
from tdlm_tree.cli import main

INTERRUPTED = "interrupted; no tree was written"

if __name__ == "__main__":
    with prompt_stop(INTERRUPTED):
        try:
            status = main(["build", *sys.argv[1:]])
        except KeyboardInterrupt:
            print(INTERRUPTED, file=sys.stderr)
            status = 130
    sys.exit(status)
