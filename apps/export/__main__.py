"""Export a trained model as a Hugging Face Hub folder:
``uv run apps/export --checkpoint RUN_OR_CHECKPOINT --out DIR [--raw_weights] [--score]``.

Writes config.json, model.safetensors (EMA weights), tokenizer.json, tree.npz, counts.npy and a
model card (README.md), ready for ``hf upload OWNER/NAME DIR``; ``--help`` lists options.
"""

import sys

from tdlm_train.cli import export_main

if __name__ == "__main__":
    sys.exit(export_main(sys.argv[1:]))
