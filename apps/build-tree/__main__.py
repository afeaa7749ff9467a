"""Build a TDLM vocabulary tree: ``uv run apps/build-tree --tokens ids.npy --out tree.npz``.

A thin wrapper over the ``tdlm-tree build`` command (see ``--help``); ``info`` is available as
``uv run tdlm-tree info tree.npz``.
"""

import sys

from tdlm_tree.cli import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]]))
