"""Data stages: fetch CelebA (or write synthetic CelebA), prepare shards, split, and load them."""
