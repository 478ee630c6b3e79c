"""SAGAN on CelebA as a reproducible pipeline (Bury, IVUS 2024)."""

__version__ = "0.1.0"
