"""Smoke profile: sample quality (SWD) against training steps, and the training's wall time.

    python benchmarks/smoke_quality.py [--dir /tmp/smoke-quality] [--eval-every 25] [--images 256]
        [--variant "NAME key=value key=value ..."]...

Each `--variant` is a name and param overrides on top of the smoke profile (configs/smoke.yaml as
it is in this working tree), e.g.
`--variant "b32 train.batch_size=32 train.epochs=8 model.g_channels=16"`; without any, the profile
itself (`--variant profile`). Values are YAML (`train.lr_g=2e-4`, `model.attention=false`).

For each variant, through the project's own code path:
  1. a scratch project `DIR/NAME` (`tools/smoke.py: make_scratch_project`: the working tree plus
     params.yaml written for the smoke profile), with the overrides written into its params.yaml,
     plus `train.checkpoint_every = --eval-every` and a high `train.keep_checkpoints` (both
     resumable-change params: they do not change what is trained, only which states are kept);
  2. `sagan download`, `sagan prepare`, `sagan split` (run once per distinct data/prepare/split
     params under `DIR/data-<hash>` and copied), then `sagan train --params params.yaml`, a
     subprocess timed with time.perf_counter (process start-up, imports and the end-of-run
     outputs included), with its CPU seconds (user + system, getrusage), and the loop's own
     wall_time_s from reports/train/run.json;
  3. every kept checkpoint at a multiple of --eval-every (and the last step), plus the untrained
     generator (step 0, the same seeded init as the trainer's), is scored: `--images` generated
     images (`sample_images`, seed 0; the EMA generator when train.ema_decay > 0, as published) against
     the first `--images` validation images, `sagan.metrics.swd.swd(..., seed=0)["swd"]` (x1e3, mean over the
     pyramid levels 32 and 16 px). A 64-image grid of fixed latents is written for each scored
     step to `DIR/NAME/quality/step_NNNNN.png`, and the run's last per-epoch sample grid
     (reports/train/samples/epoch_NNN.png, what users see) is copied to `DIR/NAME-last-grid.png`.

The floor is SWD(first --images training images, validation images): two samples of the real
distribution. The ceiling is the untrained generator (step 0). Run one variant at a time on an
otherwise idle machine (the timings assume the cores are free); the script never runs two
trainings at once. Prints one markdown table per variant (step, images seen, SWD) and a summary
table (steps, batch, wall time, final SWD).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tools")]

from sagan.metrics.swd import swd  # noqa: E402
from sagan.model.networks import Generator  # noqa: E402
from sagan.model.sample import sample_images, save_grid  # noqa: E402
from sagan.params import load_params  # noqa: E402
from smoke import make_scratch_project, orchestrator_env  # noqa: E402

DATA_SECTIONS = ("data", "prepare", "split")
SWD_SEED = 0
SAMPLE_SEED = 0


def parse_variant(text: str) -> tuple[str, dict]:
    name, *pairs = shlex.split(text)
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key.count(".") != 1:
            raise SystemExit(f"--variant {name}: expected section.key=value, got {pair!r}")
        overrides[key] = yaml.safe_load(value)
    return name, overrides


def write_overrides(params_file: Path, overrides: dict) -> None:
    raw = yaml.safe_load(params_file.read_text())
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        if section not in raw or key not in raw[section]:
            raise SystemExit(f"unknown param {dotted}")
        raw[section][key] = value
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))


def sagan(project: Path, *args: str) -> None:
    cmd = [str(Path(sys.executable).parent / "sagan"), *args, "--params", "params.yaml"]
    result = subprocess.run(cmd, cwd=project, env=orchestrator_env(), capture_output=True, text=True)
    if result.returncode:
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
        raise SystemExit(f"{' '.join(args)} failed in {project} (exit {result.returncode})")


def prepared_data(root: Path, project: Path) -> Path:
    """DIR/data-<hash of the data params>/data: downloaded, prepared and split once, then reused."""
    raw = yaml.safe_load((project / "params.yaml").read_text())
    key = hashlib.sha256(json.dumps({s: raw[s] for s in DATA_SECTIONS}, sort_keys=True).encode()).hexdigest()[:12]
    cache = root / f"data-{key}"
    if not (cache / "data" / "split").is_dir():
        work = root / f"data-{key}.work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(project, work)
        for stage in ("download", "prepare", "split"):
            sagan(work, stage)
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        shutil.copytree(work / "data", cache / "data")
        shutil.rmtree(work)
    return cache / "data"


def real_images(project: Path, split: str, n: int) -> torch.Tensor:
    """The first n images of `split` of `project`'s prepared data, uint8 NCHW."""
    import os

    from sagan.data.loader import load_split

    cwd = os.getcwd()
    os.chdir(project)  # the loader reads the project-relative paths of sagan.paths
    try:
        return load_split(split, max_images=n, verify=True).permute(0, 3, 1, 2).contiguous()
    finally:
        os.chdir(cwd)


def generator_at(state: dict | None, params, size: int) -> Generator:
    """The generator a checkpoint publishes (EMA when on), or the trainer's untrained init (state None)."""
    torch.manual_seed(params.train.seed)  # as GanTrainer: seed, then build G first
    generator = Generator(params.model, size)
    if state is not None:
        trainer = state["trainer"]
        generator.load_state_dict(trainer["EMA"] if trainer.get("EMA") is not None else trainer["G"])
    return generator.eval()


def run_variant(root: Path, name: str, overrides: dict, eval_every: int, n_images: int) -> dict:
    project = make_scratch_project(root / name)
    params_file = project / "params.yaml"
    write_overrides(params_file, {**overrides, "train.checkpoint_every": eval_every,
                                  "train.keep_checkpoints": 10_000})
    params = load_params(params_file)  # validates the overrides
    shutil.copytree(prepared_data(root, project), project / "data", dirs_exist_ok=True)

    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    sagan(project, "train")
    wall = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    record = json.loads((project / "reports/train/run.json").read_text())

    size = params.prepare.size
    val = real_images(project, "val", n_images)
    n = len(val)
    quality = project / "quality"
    quality.mkdir(exist_ok=True)
    rows = []
    checkpoints = sorted((project / "models/checkpoints").glob("step_*.pt"))
    states = [(0, None)] + [(int(p.stem.split("_")[1]), p) for p in checkpoints]
    last_step = states[-1][0]
    for step, path in states:
        if step % eval_every and step != last_step:
            continue
        state = torch.load(path, map_location="cpu", weights_only=True) if path else None
        generator = generator_at(state, params, size)
        fake = sample_images(generator, n, SAMPLE_SEED, params.model.z_dim)
        score = swd(fake, val, seed=SWD_SEED)
        save_grid(sample_images(generator, 64, SAMPLE_SEED, params.model.z_dim), quality / f"step_{step:05d}.png")
        rows.append({"step": step, "images": step * params.train.batch_size * params.train.n_critic,
                     "swd": score["swd"], **{k: v for k, v in score.items() if k != "swd"}})
    grids = sorted((project / "reports/train/samples").glob("epoch_*.png"))
    shutil.copy2(grids[-1], root / f"{name}-last-grid.png")
    floor = swd(real_images(project, "train", n), val, seed=SWD_SEED)["swd"]
    return {"name": name, "overrides": overrides, "steps": record["steps"], "batch": params.train.batch_size,
            "wall_s": wall, "cpu_s": cpu, "loop_s": record["wall_time_s"], "rows": rows, "floor": floor, "n": n,
            "grid": str(root / f"{name}-last-grid.png")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/smoke-quality"))
    parser.add_argument("--variant", action="append", default=[],
                        help='"NAME key=value ..." (repeatable; default: the profile itself)')
    parser.add_argument("--eval-every", type=int, default=25, help="score every N steps (default %(default)s)")
    parser.add_argument("--images", type=int, default=256, help="images per side for SWD (default %(default)s)")
    args = parser.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant] or [("profile", {})]
    args.dir.mkdir(parents=True, exist_ok=True)

    results = []
    for name, overrides in variants:
        print(f"== {name}: {' '.join(f'{k}={v}' for k, v in overrides.items()) or '(the smoke profile)'}", flush=True)
        result = run_variant(args.dir, name, overrides, args.eval_every, args.images)
        results.append(result)
        (args.dir / f"{name}.json").write_text(json.dumps(result, indent=1))
        print(f"\n### {name}\n\n| step | images seen | SWD x1e3 | SWD 32 px | SWD 16 px |\n|---:|---:|---:|---:|---:|")
        for row in result["rows"]:
            print(f"| {row['step']} | {row['images']} | {row['swd']:.1f} | {row.get('swd_32', float('nan')):.1f} "
                  f"| {row.get('swd_16', float('nan')):.1f} |")
        print(f"\nfloor (real train vs val, {result['n']} images): {result['floor']:.1f}; "
              f"last grid: {result['grid']}\n", flush=True)

    print("| variant | overrides | steps | batch | train wall s | train CPU s | loop s | SWD step 0 | final SWD | floor |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        over = " ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "-"
        print(f"| {r['name']} | {over} | {r['steps']} | {r['batch']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['loop_s']:.1f} "
              f"| {r['rows'][0]['swd']:.1f} | {r['rows'][-1]['swd']:.1f} | {r['floor']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
