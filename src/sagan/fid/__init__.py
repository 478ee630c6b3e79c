"""FID: Inception weights, feature statistics, `sagan fid-ref` and `sagan evaluate`."""
