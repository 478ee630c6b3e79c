"""`sagan fid-ref` and `sagan evaluate` on the prepared smoke project (synthetic, 32 px, stand-in weights)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import PicklePayload, run_record
from sagan import cli, paths, pixels
from sagan.errors import SaganError
from sagan.cli import build_parser
from sagan.commands import evaluate as evaluate_command, fid_bounds, fid_ref
from sagan.data.layout import shard_name
from sagan.metrics import evaluate, extractor, measure, reference
from sagan.metrics.results import PROTOCOL_FIELDS, Evaluation
from sagan.model.io import save_generator
from sagan.model.networks import Generator
from sagan.params import Params, load_params
from sagan.profiles import read_profile, write_profile
from sagan.study import design

ARGS = build_parser().parse_args(["evaluate", "--params", "params.yaml"])
N_REF = 4
N_GEN = 6


def _with_fid(params: Params, **changes) -> Params:
    return dataclasses.replace(params, fid=dataclasses.replace(params.fid, **changes))


@pytest.fixture(scope="module")
def project(prepared_project, tmp_path_factory) -> Path:
    """A private copy of the prepared project (cwd for this module) with the stand-in weights
    generated once, an untrained generator, and data/fid/reference.npz from 4 val images."""
    root = tmp_path_factory.mktemp("fid_stages") / "project"
    shutil.copytree(prepared_project, root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        params = base_params()
        extractor.standin_weights(paths.STANDIN_WEIGHTS_DIR)
        torch.manual_seed(0)
        save_generator(paths.RUN.generator, Generator(params.model, 32), params.model, 32, ema=False)
        fid_ref.run(params, ARGS)
        fid_bounds.run(params, ARGS)
        yield root


def base_params() -> Params:
    return _with_fid(load_params("params.yaml"), reference_max_images=N_REF, batch_size=3, num_samples=N_GEN,
                     kid_subset_size=3, device="cpu")


def test_reference_file_follows_the_contract(project):
    with np.load(paths.FID_REFERENCE, allow_pickle=False) as data:
        ref = {key: data[key] for key in data.files}
    weights = extractor.standin_weights(paths.STANDIN_WEIGHTS_DIR)
    assert ref["mu"].dtype == np.float64 and ref["mu"].shape == (2048,)
    assert ref["sigma"].dtype == np.float64 and ref["sigma"].shape == (2048, 2048)
    assert ref["kid_features"].dtype == np.float32 and ref["kid_features"].shape == (N_REF, 2048)
    assert all(ref[k].ndim == 0 for k in ref if k not in ("mu", "sigma", "kid_features"))
    assert int(ref["n"]) == N_REF
    assert (str(ref["weights_kind"]), str(ref["weights_sha256"])) == ("standin", weights.sha256)
    assert str(ref["extractor"]) == extractor.EXTRACTOR_LABEL and str(ref["reference_split"]) == "val"
    assert (int(ref["crop"]), int(ref["size"]), bool(ref["synthetic_data"])) == (160, 32, True)
    # all features were kept for KID, so the streamed moments must equal numpy's on them
    features = ref["kid_features"].astype(np.float64)
    np.testing.assert_allclose(ref["mu"], features.mean(axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ref["sigma"], np.cov(features, rowvar=False), rtol=1e-8, atol=1e-12)
    assert features.std(axis=0).mean() > 0.01


class _PixelFeatures(torch.nn.Module):
    """A cheap extractor with Inception's interface (uint8 NCHW -> (n x 2048 float32,)), for tests
    of what the stages read and write rather than of Inception itself."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 8 * 8, 2048)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))
        torch.nn.init.zeros_(self.proj.bias)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        pooled = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 8).flatten(1)
        return (torch.relu(self.proj(pooled)),)


def test_reference_depends_only_on_reference_keys_and_data(project, tmp_path, monkeypatch):
    monkeypatch.setattr(reference, "load_extractor", lambda weights, device: _PixelFeatures())
    monkeypatch.setattr(measure, "load_extractor", lambda weights, device: _PixelFeatures())
    monkeypatch.setattr(paths, "FID_REFERENCE", tmp_path / "reference.npz")
    fid_ref.run(base_params(), ARGS)
    before = paths.FID_REFERENCE.read_bytes()
    assert int(reference.read_reference()["n"]) == N_REF
    # the sampling keys (evaluate's) leave the file byte-identical
    fid_ref.run(_with_fid(base_params(), num_samples=3, seed=7, kid=False, kid_subset_size=2), ARGS)
    assert paths.FID_REFERENCE.read_bytes() == before
    # a reference key changes it
    fid_ref.run(_with_fid(base_params(), reference_max_images=N_REF - 1), ARGS)
    assert int(reference.read_reference()["n"]) == N_REF - 1
    fid_ref.run(base_params(), ARGS)
    assert paths.FID_REFERENCE.read_bytes() == before
    # evaluating a (new) generator reads the reference but never rewrites it
    _bounds_for(_with_fid(base_params(), kid=False), tmp_path, monkeypatch)
    metrics = evaluate.evaluate(_with_fid(base_params(), kid=False), paths.RUN.generator)
    assert paths.FID_REFERENCE.read_bytes() == before
    assert (metrics["kid_mean"], metrics["kid_std"], metrics["n_gen"]) == (None, None, N_GEN)


@pytest.mark.slow
def test_reference_batch_size_changes_only_rounding(project):
    """Why fid.batch_size is not a reference key: with the real stand-in Inception, per-image features
    do not depend on the batch they were computed in, up to float rounding."""
    base = reference.read_reference()
    rebatched = reference.compute_reference(_with_fid(base_params(), batch_size=N_REF).fid, verify_shards=True)
    np.testing.assert_allclose(rebatched["mu"], base["mu"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(rebatched["sigma"], base["sigma"], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("verify", [True, False])
def test_evaluate_checks_the_shards_it_reads_when_data_verify_shards_is_on(project, verify):
    shard = paths.PREPARED_DIR / shard_name(0)
    kept = {path: path.read_bytes() for path in (shard, paths.RUN.metrics, paths.RUN.metrics_protocol) if path.exists()}
    damaged = bytearray(kept[shard])
    damaged[-1] ^= 0xFF  # one pixel of the last image: bit rot
    params = dataclasses.replace(base_params(), data=dataclasses.replace(base_params().data, verify_shards=verify))
    try:
        shard.write_bytes(bytes(damaged))
        if verify:
            with pytest.raises(SaganError, match=f"^{shard}: sha256 [0-9a-f]{{64}} does not match the manifest's"):
                evaluate_command.run(params, ARGS)
        else:
            evaluate_command.run(params, ARGS)  # unchecked, as the param says: the run completes
            assert paths.RUN.metrics.is_file()
    finally:
        for path, content in kept.items():
            path.write_bytes(content)
        for path in (paths.RUN.metrics, paths.RUN.metrics_protocol):
            if path not in kept:
                path.unlink(missing_ok=True)


def test_evaluate_end_to_end_on_an_untrained_generator(project, capsys):
    evaluate_command.run(base_params(), ARGS)  # no reports/train/run.json: a warning, no MLflow
    numbers = json.loads(paths.RUN.metrics.read_text())  # numbers only: what `dvc metrics show` tabulates
    scores = {"fid": float, "kid_mean": float, "kid_std": float, "precision": float, "recall": float,
              "swd": float, "swd_32": float, "swd_16": float, "n_gen": int, "n_ref": int, "n_swd": int}
    assert {k: type(v) for k, v in numbers.items()} == {**scores, "wall_time_s": float, "floor": dict, "ceiling": dict}
    stored_bounds = json.loads(paths.FID_BOUNDS.read_text())
    for row in ("floor", "ceiling"):  # beside every number, measured with the same protocol
        assert {k: type(v) for k, v in numbers[row].items()} == scores and numbers[row] == stored_bounds[row]
    assert numbers["ceiling"]["n_gen"] == N_GEN and numbers["n_swd"] == N_REF  # SWD: as many images per side
    # the fixture's generator is the untrained one (train.seed 0): evaluate scores exactly the ceiling
    assert base_params().train.seed == 0 and {k: numbers[k] for k in scores} == numbers["ceiling"]
    assert 0 <= numbers["precision"] <= 1 and 0 <= numbers["recall"] <= 1
    protocol = json.loads(paths.RUN.metrics_protocol.read_text())
    assert {k: type(v) for k, v in protocol.items()} == {
        "reference_split": str, "extractor": str, "weights_sha256": str, "weights_kind": str, "preprocessing": dict,
        "synthetic_data": bool, "metric_protocols": dict, "generator": str, "run_id": type(None),  # no run.json
        "metrics_sha256": str}
    assert set(protocol["metric_protocols"]) == {"kid", "precision_recall", "swd"}
    assert protocol["metrics_sha256"] == hashlib.sha256(paths.RUN.metrics.read_bytes()).hexdigest()
    evaluation = Evaluation.read(paths.RUN)
    assert evaluation.numbers["fid"] > 0 and evaluation.numbers["kid_std"] >= 0
    assert (evaluation.numbers["n_gen"], evaluation.numbers["n_ref"], evaluation.weights_kind,
            evaluation.synthetic_data) == (N_GEN, N_REF, "standin", True)
    assert evaluation.weights_sha256 == extractor.standin_weights(paths.STANDIN_WEIGHTS_DIR).sha256
    assert evaluation.preprocessing == {"crop": 160, "size": 32, "resize_to_inception": "torch-fidelity bilinear 299"}
    out, err = capsys.readouterr()
    assert f"sagan evaluate: FID {evaluation.numbers['fid']:.3f}, KID " in out
    assert f"sagan evaluate: warning: {paths.RUN.run_record} not found; metrics not logged to MLflow\n" in err


def _bounds_for(params: Params, tmp_path: Path, monkeypatch) -> None:
    """data/fid/bounds.json measured with `params` (evaluate refuses bounds of other sampling params),
    in tmp_path, so that the module's own file stays as the fixture wrote it."""
    monkeypatch.setattr(paths, "FID_BOUNDS", tmp_path / "bounds.json")
    fid_bounds.run(params, ARGS)


def _recorded_training_run(params: Params):
    """An MLflow run in the params' store, named by reports/train/run.json as train would name it."""
    import mlflow

    mlflow.set_tracking_uri(params.mlflow.tracking_uri)
    mlflow.set_experiment(params.mlflow.experiment)
    with mlflow.start_run() as training_run:
        pass
    run_record(training_run.info.run_id).write(paths.RUN.run_record)
    return training_run


def test_metrics_are_logged_into_the_training_run(project, monkeypatch, capsys):
    import mlflow

    params = base_params()
    training_run = _recorded_training_run(params)
    metrics = {"fid": 12.5, "kid_mean": 0.25, "kid_std": None, "swd": 80.0, "n_gen": 6, "n_ref": 4, "wall_time_s": 2.0,
               "floor": {"fid": 2.0, "swd": 30.0, "n_gen": 6}, "ceiling": {"fid": 40.0, "swd": 200.0, "n_gen": 6},
               "reference_split": "val", "preprocessing": {"crop": 160, "size": 32},
               "extractor": extractor.EXTRACTOR_LABEL, "weights_sha256": "ab" * 32, "weights_kind": "standin",
               "synthetic_data": True, "run_id": "another-run", "generator": "last", "metric_protocols": {}}
    # run.json names another run than the one these metrics were checked against (replaced since): no logging
    evaluate.log_to_training_run(params, Evaluation.from_dict(metrics), paths.RUN.run_record)
    assert mlflow.get_run(training_run.info.run_id).data.metrics == {}
    assert "metrics not logged to MLflow" in capsys.readouterr().err
    evaluate.log_to_training_run(params, Evaluation.from_dict({**metrics, "run_id": training_run.info.run_id}),
                                 paths.RUN.run_record)
    logged = mlflow.get_run(training_run.info.run_id).data
    # kid_std None, the sample counts and the protocol are no metrics
    assert logged.metrics == {"fid": 12.5, "kid_mean": 0.25, "swd": 80.0, "floor/fid": 2.0, "floor/swd": 30.0,
                              "ceiling/fid": 40.0, "ceiling/swd": 200.0}
    assert logged.tags["sagan.fid_weights_kind"] == "standin"
    assert logged.tags["sagan.fid_weights_sha256"] == "ab" * 32
    assert logged.tags["sagan.synthetic_data"] == "true"


def test_generated_images_do_not_depend_on_batch_size():
    torch.manual_seed(0)
    generator = Generator(read_profile("smoke", Path(__file__).parents[1]).params.model, 32).eval()
    one = torch.cat(list(measure.generated_batches(generator, generator.z_dim, 10, 10, seed=3)))
    three = torch.cat(list(measure.generated_batches(generator, generator.z_dim, 10, 3, seed=3)))
    assert one.shape == (10, 3, 32, 32) and one.dtype == torch.uint8
    assert torch.equal(one, three)


def test_to_uint8_matches_how_pixels_are_stored():
    x = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    assert pixels.to_uint8(x).tolist() == [0, 0, 64, 128, 191, 255, 255]  # 63.75, 127.5 (even), 191.25
    stored = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(pixels.to_uint8(pixels.to_signed(stored)), stored)


def _error(capsys, *argv) -> str:
    assert cli.main([*argv, "--params", "params.yaml"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1  # one line
    return err.strip()


def test_missing_reference_and_generator_are_one_line(project, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copy(project / "params.yaml", "params.yaml")
    assert _error(capsys, "evaluate") == ("sagan evaluate: error: data/fid/reference.npz: not found; it is written "
                                          "by `sagan fid-ref` (hint: run `sagan fid-ref`, or the whole pipeline: "
                                          "`dvc repro`)")
    shutil.copytree(project / "data", "data")
    assert _error(capsys, "evaluate").startswith(
        "sagan evaluate: error: models/generator.pt: not found; it is written by `sagan train`")


def test_reference_mismatches_are_one_line(project, tmp_path, monkeypatch):
    ref = reference.read_reference()
    arrays = {k: np.asarray(v) for k, v in ref.items() if k != "sha256"}  # sha256: of the file read, not in it
    monkeypatch.setattr(paths, "FID_REFERENCE", tmp_path / "reference.npz")
    reference.write_npz(paths.FID_REFERENCE, {**arrays, "size": np.array(64)})
    with pytest.raises(SaganError, match=r"reference.npz: reference images are 64 px but models/generator.pt "
                                         r"makes 32 px \(hint: rerun `sagan fid-ref`"):
        evaluate.evaluate(base_params(), paths.RUN.generator)
    reference.write_npz(paths.FID_REFERENCE, {**arrays, "weights_kind": np.array("official"),
                                              "weights_sha256": np.array("6726825d" + "0" * 56)})
    with pytest.raises(SaganError, match=rf"reference.npz: computed with Inception weights official sha256 "
                                         rf"6726825d0+, but fid.weights gives standin sha256 {ref['weights_sha256']} "
                                         rf"\(hint: rerun `sagan fid-ref`\)"):
        evaluate.evaluate(base_params(), paths.RUN.generator)
    del arrays["sigma"]
    reference.write_npz(paths.FID_REFERENCE, arrays)
    with pytest.raises(SaganError, match=r"reference.npz: missing sigma$"):  # a file outside the project
        evaluate.evaluate(base_params(), paths.RUN.generator)


def test_an_unknown_device_is_named_with_its_param(project):
    with pytest.raises(SaganError, match=r"^fid.device: unknown device 'gpu0' \(hint: use auto, cpu or cuda\)$"):
        evaluate.evaluate(_with_fid(base_params(), device="gpu0"), paths.RUN.generator)


def test_evaluate_records_the_training_run_it_belongs_to(project, tmp_path, monkeypatch, capsys):
    import mlflow

    monkeypatch.setattr(measure, "load_extractor", lambda weights, device: _PixelFeatures())
    params = _with_fid(base_params(), kid=False)
    _bounds_for(params, tmp_path, monkeypatch)
    training_run = _recorded_training_run(params)
    evaluate_command.run(params, ARGS)
    evaluation = Evaluation.read(paths.RUN)
    assert evaluation.run_id == training_run.info.run_id
    assert "kid_mean" not in json.loads(paths.RUN.metrics.read_text())  # fid.kid off: no KID column, not a null
    assert mlflow.get_run(training_run.info.run_id).data.metrics["fid"] == pytest.approx(evaluation.numbers["fid"])
    # no run.json (a foreign generator): still evaluated, with the warning, and run_id null
    paths.RUN.run_record.unlink()
    capsys.readouterr()
    evaluate_command.run(params, ARGS)
    assert Evaluation.read(paths.RUN).run_id is None
    assert f"{paths.RUN.run_record} not found; metrics not logged to MLflow" in capsys.readouterr().err


def test_evaluate_generator_best_scores_the_best_file_and_says_so(project, monkeypatch, tmp_path):
    monkeypatch.setattr(measure, "load_extractor", lambda weights, device: _PixelFeatures())
    params = base_params()
    torch.manual_seed(1)  # another generator than generator.pt
    save_generator(paths.RUN.generator_best, Generator(params.model, 32), params.model, 32, ema=False)
    try:
        best = dataclasses.replace(params, evaluate=dataclasses.replace(params.evaluate, generator="best"))
        evaluate_command.run(best, ARGS)
        scored = Evaluation.read(paths.RUN)
        assert scored.generator == "best"
        assert scored.numbers["fid"] == evaluate.evaluate(params, paths.RUN.generator_best)["fid"]
        evaluate_command.run(params, ARGS)  # the default: the last generator, as in the paper
        last = Evaluation.read(paths.RUN)
        assert last.generator == "last" and last.numbers["fid"] != scored.numbers["fid"]
    finally:
        paths.RUN.generator_best.unlink()


def test_kid_subset_size_below_two_names_the_param(project, tmp_path, monkeypatch):
    monkeypatch.setattr(measure, "load_extractor", lambda weights, device: _PixelFeatures())
    with pytest.raises(SaganError) as exc:
        evaluate.evaluate(_with_fid(base_params(), kid_subset_size=1), paths.RUN.generator)
    assert str(exc.value).startswith(f"fid.kid_subset_size: 1; KID needs subsets of at least 2 and at most "
                                     f"min(fid.num_samples, reference features) = {min(N_GEN, N_REF)} ")
    assert "\n" not in str(exc.value)
    # larger than the pools: capped (small runs still get a KID), as before
    _bounds_for(_with_fid(base_params(), kid_subset_size=1000), tmp_path, monkeypatch)
    metrics = evaluate.evaluate(_with_fid(base_params(), kid_subset_size=1000), paths.RUN.generator)
    assert metrics["kid_mean"] is not None


@pytest.mark.parametrize("kid", [True, False])
def test_num_samples_below_two_names_the_param(project, kid):
    with pytest.raises(SaganError, match=r"^fid.num_samples: 1; FID needs at least 2 samples [^\n]*$"):
        evaluate.evaluate(_with_fid(base_params(), num_samples=1, kid=kid), paths.RUN.generator)


def _publish_run(outputs: paths.RunOutputs, run_id: str, seed: int) -> None:
    """What a `sagan train` publishes at its end, as far as evaluate reads it: a generator, then run.json."""
    params = base_params()
    torch.manual_seed(seed)
    save_generator(outputs.generator, Generator(params.model, 32), params.model, 32, ema=False)
    run_record(run_id).write(outputs.run_record)


@pytest.mark.parametrize("where,new_run_id,changed", [
    ("pipeline", "run-b", "models/generator.pt and reports/train/run.json"),
    ("pipeline", "run-a", "models/generator.pt"),  # a run continued to more steps keeps its MLflow run
    ("cell", "run-b", "studies/s/cells/c/models/generator.pt and studies/s/cells/c/reports/train/run.json"),
])
def test_a_train_publishing_while_evaluate_runs_is_refused_not_misattributed(project, monkeypatch, where,
                                                                             new_run_id, changed):
    """evaluate read the generator at its start and run.json at its end: a train that published in
    between got the old generator's FID under the new run's id."""
    monkeypatch.setattr(measure, "load_extractor", lambda weights, device: _PixelFeatures())
    outputs = paths.RUN if where == "pipeline" else paths.RunOutputs("studies/s/cells/c")
    if where == "cell":  # the cell studies/s/cells/c, with the params given
        monkeypatch.setattr(design, "resolve_cell",
                            lambda params, study, cell: types.SimpleNamespace(outputs=outputs, params=params))
    args = ARGS
    kept = paths.RUN.generator.read_bytes()  # the module's untrained generator, which other tests score
    real_score = measure.score

    def score_while_train_publishes(*args, **kwargs):
        _publish_run(outputs, new_run_id, seed=1)
        return real_score(*args, **kwargs)

    try:
        _publish_run(outputs, "run-a", seed=0)
        written = outputs.metrics.read_bytes() if outputs.metrics.exists() else None
        monkeypatch.setattr(measure, "score", score_while_train_publishes)
        with pytest.raises(SaganError) as exc:
            evaluate_command.run(base_params(), args)
        assert str(exc.value) == (
            f"{changed} changed while evaluate ran (a `sagan train` published a run meanwhile); no metrics were "
            f"written, as they would be attributed to another run than the one they measure (hint: rerun `sagan "
            f"evaluate` once training has finished)")
        assert (outputs.metrics.read_bytes() if outputs.metrics.exists() else None) == written
    finally:
        paths.RUN.generator.write_bytes(kept)
        paths.RUN.run_record.unlink(missing_ok=True)
        shutil.rmtree("studies", ignore_errors=True)


@pytest.fixture
def no_sampling(monkeypatch):
    """evaluate's sampler and scorer fail the test: a refusal must come before any sample."""
    def sampled(*args, **kwargs):
        raise AssertionError("evaluate generated and scored samples before refusing")

    monkeypatch.setattr(measure, "generated_batches", sampled)
    monkeypatch.setattr(measure, "score", sampled)


def test_bounds_of_another_reference_are_refused_before_any_sample(project, tmp_path, monkeypatch, no_sampling):
    stored = json.loads(paths.FID_BOUNDS.read_text())
    assert stored["reference_sha256"] == hashlib.sha256(paths.FID_REFERENCE.read_bytes()).hexdigest()
    assert stored["params"] == {"fid.num_samples": N_GEN, "fid.seed": 0, "fid.kid": True, "fid.kid_subset_size": 3,
                                "fid.swd_images": base_params().fid.swd_images}
    # fid.reference_max_images changed and `sagan fid-ref` rerun; bounds.json is the old reference's
    for module in (reference, measure):
        monkeypatch.setattr(module, "load_extractor", lambda weights, device: _PixelFeatures())
    monkeypatch.setattr(paths, "FID_REFERENCE", tmp_path / "reference.npz")
    params = _with_fid(base_params(), reference_max_images=N_REF - 1)
    fid_ref.run(params, ARGS)
    new = hashlib.sha256(paths.FID_REFERENCE.read_bytes()).hexdigest()
    with pytest.raises(SaganError, match=rf"^data/fid/bounds\.json: was measured against another FID reference "
                                         rf"\(sha256 {stored['reference_sha256']}\) than {paths.FID_REFERENCE} "
                                         rf"\(sha256 {new}\); it is written by `sagan fid-bounds` \(hint: run "
                                         rf"`sagan fid-bounds`, or the whole pipeline: `dvc repro`\)$"):
        evaluate.evaluate(params, paths.RUN.generator)


def test_bounds_of_other_sampling_params_are_refused_before_any_sample(project, no_sampling):
    with pytest.raises(SaganError, match=r"^data/fid/bounds\.json: was measured with fid\.seed 0, fid\.swd_images "
                                         r"\d+; the params give fid\.seed 5, fid\.swd_images 3; it is written by "
                                         r"`sagan fid-bounds` \(hint: "):
        evaluate.evaluate(_with_fid(base_params(), seed=5, swd_images=3), paths.RUN.generator)


@pytest.mark.parametrize("damage", [lambda kept: kept[: len(kept) // 2], lambda kept: b"\xff" + kept],
                         ids=["truncated", "not-utf8"])
def test_a_damaged_bounds_file_is_refused_before_any_sample(project, no_sampling, damage):
    kept = paths.FID_BOUNDS.read_bytes()
    try:
        paths.FID_BOUNDS.write_bytes(damage(kept))
        with pytest.raises(SaganError, match=r"^data/fid/bounds\.json: not valid JSON \([^\n]*\); it is written "
                                             r"by `sagan fid-bounds`"):
            evaluate.evaluate(base_params(), paths.RUN.generator)
    finally:
        paths.FID_BOUNDS.write_bytes(kept)


# --- sagan check-fid -------------------------------------------------------------------------

PROTOCOL = {"n_gen": 6, "n_ref": 4, "reference_split": "val", "weights_kind": "standin", "weights_sha256": "ab" * 32,
            "preprocessing": {"crop": 160, "size": 32, "resize_to_inception": "torch-fidelity bilinear 299"}}
# The rest of an evaluation's two files, beside PROTOCOL and the FID each test sets.
EVALUATION = {**PROTOCOL, "generator": "last", "fid": 9.0, "kid_mean": None, "kid_std": None, "wall_time_s": 1.0, "run_id": None,
              "extractor": "inception-v3-compat", "synthetic_data": True, "metric_protocols": {"swd": "x1e3"},
              "floor": {"fid": 2.0, "swd": 10.0}, "ceiling": {"fid": 30.0, "swd": 200.0}}


def _check_fid(tmp_path, monkeypatch, capsys, metrics: dict, baseline: dict, drop: str = "",
               one_line: bool = True) -> tuple[int, str, str]:
    """`sagan check-fid` on an evaluation of `metrics` (the rest from EVALUATION) without the key `drop`:
    its exit code, stderr and stdout."""
    write_profile("smoke", tmp_path / "smoke.yaml", root=Path(__file__).resolve().parents[1])
    monkeypatch.chdir(tmp_path)
    paths.RUN.metrics.parent.mkdir(exist_ok=True)
    Evaluation.from_dict({**EVALUATION, **metrics}).write(paths.RUN)
    if drop:
        path = paths.RUN.metrics_protocol if drop in PROTOCOL_FIELDS else paths.RUN.metrics
        path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != drop}))
    Path("baseline.json").write_text(json.dumps(baseline))
    rc = cli.main(["check-fid", "--params", "smoke.yaml", "--baseline", "baseline.json"])
    out, err = capsys.readouterr()
    assert err.count("\n") == (1 if one_line else 0), err  # one line, or none
    return rc, err.strip(), out


def test_check_fid_still_reports_a_regression(tmp_path, monkeypatch, capsys):
    rc, err, _ = _check_fid(tmp_path, monkeypatch, capsys, {"fid": 20.0, **PROTOCOL},
                         {"fid": 10.0, "tolerance": 0.15, "protocol": PROTOCOL})
    assert rc == 1 and err.startswith("sagan check-fid: error: FID regressed: 20.0000 > baseline 10.0000")


def test_check_fid_passes_a_generator_that_closes_most_of_the_gap(tmp_path, monkeypatch, capsys):
    # (30 - 9) / (30 - 2) = 75% of the way from the untrained generator to real images
    rc, err, out = _check_fid(tmp_path, monkeypatch, capsys, {"fid": 9.0}, {"fid": 10.0, "tolerance": 0.15,
                                                                         "protocol": PROTOCOL}, one_line=False)
    assert rc == 0 and err == "" and out.endswith("sagan check-fid: OK\n")
    assert "75% of the gap closed, 50% required" in out


def test_check_fid_fails_a_generator_near_the_untrained_one_even_within_tolerance(tmp_path, monkeypatch, capsys):
    # within the baseline's tolerance (a baseline of a run that learned nothing), but (30 - 20) / 28 = 36%
    rc, err, _ = _check_fid(tmp_path, monkeypatch, capsys, {"fid": 20.0}, {"fid": 19.0, "tolerance": 0.15,
                                                                        "protocol": PROTOCOL})
    assert rc == 1 and err.startswith("sagan check-fid: error: the trained generator (FID 20.0000) closes 36% of the "
                                      "gap between the untrained generator (30.0000) and real images (2.0000); 50% "
                                      "required")


def test_check_fid_refuses_bounds_that_cannot_tell_noise_from_images(tmp_path, monkeypatch, capsys):
    rc, err, _ = _check_fid(tmp_path, monkeypatch, capsys, {"fid": 9.0, "floor": {"fid": 31.0}},
                         {"fid": 10.0, "tolerance": 0.15, "protocol": PROTOCOL})
    assert rc == 1 and err.startswith("sagan check-fid: error: data/fid/bounds.json: its ceiling FID 30.0000 is not "
                                      "above its floor 31.0000"), err


@pytest.mark.parametrize("fid", ["n/a", True, float("nan")])
def test_check_fid_refuses_a_non_number_fid_in_metrics(tmp_path, monkeypatch, capsys, fid):
    rc, err, _ = _check_fid(tmp_path, monkeypatch, capsys, {"fid": fid, **PROTOCOL},
                         {"fid": 10.0, "tolerance": 0.15, "protocol": PROTOCOL})
    assert rc == 1 and err.startswith(f"sagan check-fid: error: reports/metrics.json: 'fid' is {fid!r}, not a "
                                      f"finite number; it is written by `sagan evaluate`")


def test_check_fid_names_a_key_missing_from_metrics(tmp_path, monkeypatch, capsys):
    rc, err, _ = _check_fid(tmp_path, monkeypatch, capsys, {"fid": 9.0}, {"fid": 10.0, "tolerance": 0.15,
                                                                       "protocol": PROTOCOL}, drop="weights_kind")
    assert rc == 1 and err.startswith("sagan check-fid: error: reports/metrics_protocol.json: missing "
                                      "'weights_kind'; it is written by `sagan evaluate`")


def test_metrics_from_another_evaluation_are_refused(tmp_path, monkeypatch):
    """A kill between evaluate's two writes, or a hand edit, must not pair numbers with the wrong protocol."""
    monkeypatch.chdir(tmp_path)
    Evaluation.from_dict(EVALUATION).write(paths.RUN)
    assert Evaluation.read(paths.RUN).numbers["fid"] == 9.0
    paths.RUN.metrics.write_text(json.dumps({**json.loads(paths.RUN.metrics.read_text()), "fid": 8.0}))
    with pytest.raises(SaganError, match=r"^reports/metrics\.json: is not the file reports/metrics_protocol\.json "
                                         r"describes \(its sha256 differs\): the two come from different evaluations; "
                                         r"it is written by `sagan evaluate`"):
        Evaluation.read(paths.RUN)


@pytest.mark.parametrize("baseline,problem", [
    ({"fid": 10.0, "tolerance": 0.15}, "missing 'protocol'"),
    ({"tolerance": 0.15, "protocol": PROTOCOL}, "missing 'fid'"),
    ({"fid": 10.0, "protocol": PROTOCOL}, "missing 'tolerance'"),
    ({"fid": 10.0, "tolerance": 0.15, "protocol": {k: v for k, v in PROTOCOL.items() if k != "n_ref"}},
     "missing 'protocol.n_ref'"),
    ({"fid": 10.0, "tolerance": 0.15, "protocol": ["n_gen"]}, "'protocol' is ['n_gen'], not an object"),
    ({"fid": "ten", "tolerance": 0.15, "protocol": PROTOCOL}, "'fid' is 'ten', not a number"),
    ([1, 2], "not a JSON object"),
])
def test_check_fid_names_the_baseline_file_and_key(tmp_path, monkeypatch, capsys, baseline, problem):
    rc, err, _ = _check_fid(tmp_path, monkeypatch, capsys, {"fid": 9.0, **PROTOCOL}, baseline)
    assert rc == 1 and err.startswith(f"sagan check-fid: error: baseline.json: {problem}"), err


def test_fid_ref_refuses_planted_standin_weights_without_running_them(project, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copy(project / "params.yaml", "params.yaml")
    shutil.copytree(project / "data", "data")
    assert load_params("params.yaml").fid.weights == "standin"
    marker = tmp_path / "payload-ran"
    planted = paths.STANDIN_WEIGHTS_DIR / extractor.STANDIN_FILE
    planted.parent.mkdir(parents=True)
    torch.save({"fc.weight": PicklePayload(marker)}, planted)
    planted.with_name(planted.name + ".sha256").write_text(hashlib.sha256(planted.read_bytes()).hexdigest() + "\n")
    assert _error(capsys, "fid-ref").startswith(f"sagan fid-ref: error: {planted}: holds objects other than tensors")
    assert not marker.exists()
