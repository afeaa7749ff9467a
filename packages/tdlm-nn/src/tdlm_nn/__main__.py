"""``python -m tdlm_nn``: print the presets' parameter breakdowns (see :mod:`tdlm_nn.presets`)."""

from .presets import main

main()
