"""tdlm-train: package skeleton; its contents arrive with its own issue (see README.md)."""

__version__ = "0.1.0"
