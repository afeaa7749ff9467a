"""Run inside a fresh venv holding only the tdlm-tree wheel and what pip pulled for it.

Shows that tdlm-tree depends on numpy alone (no torch, none of our other packages), then builds,
saves and loads a tree there.
"""

import importlib.metadata
import importlib.util
import sys

import numpy as np

from tdlm_tree import cooccurrence_tree, load_tree, save_tree

installed = sorted(d.metadata["Name"].lower() for d in importlib.metadata.distributions())
print("installed:", ", ".join(installed))
assert "numpy" in installed, "tdlm-tree must pull numpy"
unwanted = {"torch", "tdlm-diffusion", "tdlm-nn", "tdlm-train"} & set(installed)
assert not unwanted, f"tdlm-tree pulled {sorted(unwanted)}"
assert importlib.util.find_spec("torch") is None

ids = np.random.default_rng(0).integers(0, 500, 50_000)
tree = cooccurrence_tree(ids, 500, 16, seed=0)
path = save_tree(tree, sys.argv[1])
assert load_tree(path, vocab_size=500) == tree
print(f"built, saved and loaded {tree!r} with numpy {np.__version__} alone")
