"""The SAGAN model: networks (`networks`), self-attention (`attention`), losses (`losses`),
the generator file (`io`) and `sagan sample` (`sample`). Import the submodule you need."""
