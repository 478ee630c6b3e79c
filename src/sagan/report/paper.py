"""Table 1 of Bury (IVUS 2024) as published, with the citation of every row."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperRow:
    model: str
    fid: float
    source: str


TABLE1: tuple[PaperRow, ...] = (
    PaperRow("BEGAN-CS", 34.13, "Park et al., Electronics 9 (2020) [paper ref 29]"),
    # The paper cites nothing for this row; the number is only known from its Table 1.
    PaperRow("PR-BigGAN", 22.45, "no citation given in the paper; as reported by Bury 2024"),
    PaperRow("DualGAN", 13.95, 'Wei et al., ECCV 2022 [paper ref 30, "DuelGAN"]'),
    PaperRow("Proposed architecture (paper)", 21.88, "Bury, IVUS 2024"),
)

# The paper states no FID protocol; ours is recorded beside our number instead.
PAPER_PROTOCOL = "not stated in the paper"
