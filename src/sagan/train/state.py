"""LoopState: what the training loop carries from step to step, checkpointed as one unit (a
checkpoint's `loop`), and what the published outputs are made from (sagan.train.publish)."""
from __future__ import annotations

import dataclasses

import torch

from sagan.train.step import LOSSES, METRICS


@dataclasses.dataclass
class LoopState:
    """Everything the loop carries from step to step, checkpointed and restored as one unit."""

    step: int  # steps done
    perm_state: torch.Tensor  # the permutation generator's state before the draw of the next step's epoch
    metric_sum: torch.Tensor  # METRICS summed over the current log window (on the device)
    window_steps: int  # steps in the current log window
    first_bad: torch.Tensor  # per LOSSES, the first step where it was NaN/Inf, else -1 (on the device)
    log_rows: list[dict]  # the rows of losses.csv
    grids: dict[int, torch.Tensor]  # epoch -> its fixed-z sample grid, uint8 NCHW
    mlflow_run_id: str
    wall_time_s: float  # training seconds up to the newest checkpoint, over all resumptions
    evals: list[dict]  # the rows of evals.csv (train.eval_every)
    best: dict | None  # the lowest-FID evaluation: step, fid and the sampling generator's weights (CPU)

    @classmethod
    def start(cls, perm_state: torch.Tensor, device: torch.device) -> LoopState:
        return cls(step=0, perm_state=perm_state, metric_sum=torch.zeros(len(METRICS), device=device),
                   window_steps=0, first_bad=torch.full((len(LOSSES),), -1, dtype=torch.long, device=device),
                   log_rows=[], grids={}, mlflow_run_id="", wall_time_s=0.0, evals=[], best=None)

    def state_dict(self) -> dict:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, state[field.name])
        self.metric_sum, self.first_bad = self.metric_sum.to(device), self.first_bad.to(device)
