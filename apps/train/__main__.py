"""Train a TDLM (or the MDLM baseline): ``uv run apps/train [--preset tiny] [--section.key value]``.

With no arguments: the tiny TDLM on the Python standard library's sources, on this machine's
CPU, within ``--minutes 7`` of training, ending with a summary table, a sample and a plot.
``--help`` lists every option.
"""

import sys

from tdlm_train.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main(sys.argv[1:]))
