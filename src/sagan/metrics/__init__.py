"""Metrics: Inception weights and features, FID/KID/precision/recall, SWD, the floor and
ceiling, the metrics files and the CI gate."""
