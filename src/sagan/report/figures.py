"""Figs. 4-6 of the paper, regenerated from the training stage's losses and sample grids, and
Fig. 7 (ours): FID and SWD during training, from its evaluations (train.eval_every)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

FIG4 = "fig4_losses.png"
FIG5 = "fig5_first_epoch.png"
FIG6 = "fig6_last_epoch.png"
FIG7 = "fig7_fid_swd_over_steps.png"


def mean_losses_per_epoch(losses: pd.DataFrame) -> pd.DataFrame:
    """Fig. 4 plots the mean loss of each epoch, not the noisy per-step values."""
    return losses.groupby("epoch", sort=True)[["g_loss", "d_loss"]].mean()


def loss_figure(losses: pd.DataFrame):
    """Fig. 4 as a matplotlib figure (the caller saves and closes it)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on CI or cluster nodes
    import matplotlib.pyplot as plt

    per_epoch = mean_losses_per_epoch(losses)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    ax.plot(per_epoch.index, per_epoch["g_loss"], marker="o", label="generator")
    ax.plot(per_epoch.index, per_epoch["d_loss"], marker="o", label="discriminator")
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole: no tick at 1.5
    ax.set_ylabel("mean loss")
    ax.set_title("Fig. 4: mean generator and discriminator loss per epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def evals_figure(evals: pd.DataFrame):
    """Fig. 7: FID (left axis) and SWD (right axis) of the evaluations during training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, fid_ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    swd_ax = fid_ax.twinx()
    fid_line, = fid_ax.plot(evals["step"], evals["fid"], marker="o", color="tab:blue", label="FID")
    swd_line, = swd_ax.plot(evals["step"], evals["swd"], marker="s", color="tab:orange", label="SWD (x1e3)")
    fid_ax.set_xlabel("training step")
    fid_ax.set_ylabel("FID")
    swd_ax.set_ylabel("SWD (x1e3)")
    fid_ax.set_title(f"Fig. 7: FID and SWD during training ({int(evals['n_gen'].iloc[0])} samples each)")
    fid_ax.grid(alpha=0.3)
    fid_ax.legend(handles=[fid_line, swd_line])
    fig.tight_layout()
    return fig


def _save(fig, out: Path) -> None:
    import matplotlib.pyplot as plt

    # No Software/date metadata, so that the same data give the same bytes.
    fig.savefig(out, format="png", metadata={"Software": None})
    plt.close(fig)


def plot_losses(losses: pd.DataFrame, out: Path) -> None:
    _save(loss_figure(losses), out)


def write_figures(losses: pd.DataFrame, evals: pd.DataFrame, first_sample: Path, last_sample: Path,
                  directory: Path) -> dict[str, Path]:
    """Write Figs. 4-6, and Fig. 7 when there were evaluations, into `directory`; returns figure
    name -> path."""
    figures = {FIG4: directory / FIG4, FIG5: directory / FIG5, FIG6: directory / FIG6}
    plot_losses(losses, figures[FIG4])
    if not evals.empty:
        figures[FIG7] = directory / FIG7
        _save(evals_figure(evals), figures[FIG7])
    shutil.copyfile(first_sample, figures[FIG5])
    shutil.copyfile(last_sample, figures[FIG6])
    return figures
