"""FID building blocks: streaming statistics, Fréchet distance, KID, Inception weights."""
from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from helpers import PicklePayload, prepared_faces
from sagan import paths
from sagan.device import resolve_device
from sagan.errors import SaganError
from sagan.metrics import extractor
from sagan.metrics.stats import (FeatureSummary, RunningStats, frechet_distance, kernel_inception_distance,
                             precision_recall)


def _gaussian_sets(dim=16, n=400, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim)) + 3.0
    b = rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim)) * 0.7 - 1.0
    return a, b


def _frechet_scipy(a: np.ndarray, b: np.ndarray) -> float:
    """Textbook FID with scipy's matrix square root, independent of torch-fidelity's eigvals route."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _stats(x: np.ndarray, batch: int = 37) -> tuple[np.ndarray, np.ndarray]:
    stats = RunningStats(x.shape[1])
    for start in range(0, len(x), batch):
        stats.update(x[start:start + batch])
    return stats.mean, stats.cov


# --- statistics -----------------------------------------------------------------------------

def test_streaming_mean_cov_equal_numpy_on_all_at_once():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1001, 24)) * rng.uniform(0.1, 5, 24) + 1e3  # large offset: no cancellation
    mean, cov = _stats(x, batch=64)  # uneven last batch
    assert mean.dtype == np.float64 and cov.dtype == np.float64 and cov.shape == (24, 24)
    np.testing.assert_allclose(mean, np.mean(x, axis=0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)


def test_streaming_stats_accept_torch_float32_and_single_rows():
    x = torch.randn(10, 5, generator=torch.Generator().manual_seed(0))
    stats = RunningStats(5)
    for row in x:
        stats.update(row[None])
    assert stats.n == 10
    np.testing.assert_allclose(stats.cov, np.cov(x.double().numpy(), rowvar=False), rtol=1e-10)
    with pytest.raises(ValueError, match="at least 2"):
        RunningStats(3).cov
    with pytest.raises(ValueError, match=r"shape \(n, 5\)"):
        stats.update(np.zeros((2, 4)))


def test_feature_summary_keeps_only_the_first_rows():
    summary = FeatureSummary(3, keep=5)
    x = torch.arange(24, dtype=torch.float32).reshape(8, 3)
    summary.update(x[:4])
    summary.update(x[4:])
    assert summary.stats.n == 8
    assert summary.kept.dtype == np.float32
    np.testing.assert_array_equal(summary.kept, x[:5].numpy())


def test_frechet_distance_agrees_with_scipy_sqrtm():
    a, b = _gaussian_sets()
    ours = frechet_distance(*_stats(a), *_stats(b))
    assert ours > 10  # genuinely different sets, so the relative check is meaningful
    assert ours == pytest.approx(_frechet_scipy(a, b), rel=1e-6)


def test_frechet_distance_is_zero_on_itself_and_symmetric():
    a, b = _gaussian_sets(seed=2)
    sa, sb = _stats(a), _stats(b)
    assert abs(frechet_distance(*sa, *sa)) < 1e-6
    assert frechet_distance(*sa, *sb) == pytest.approx(frechet_distance(*sb, *sa), rel=1e-9)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(3)
    same1, same2 = rng.standard_normal((200, 32)), rng.standard_normal((200, 32))
    shifted = rng.standard_normal((200, 32)) + 1.0
    kid_same, std_same = kernel_inception_distance(same1, same2, subset_size=100, seed=0)
    kid_diff, _ = kernel_inception_distance(same1, shifted, subset_size=100, seed=0)
    assert abs(kid_same) < 0.05 and std_same >= 0
    assert kid_diff > 0.5  # poly kernel (x.y/32 + 1)^3: the mean shift of 1 per dim gives ~1.1
    # the subset is capped at the smaller pool, so a few features still give a value
    assert np.isfinite(kernel_inception_distance(same1[:10], shifted, subset_size=1000, seed=0)[0])
    with pytest.raises(ValueError, match="^KID subsets need at least 2 features, got subset_size 1$"):
        kernel_inception_distance(same1, shifted, subset_size=1, seed=0)


# --- weights --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def standin_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("standin")
    extractor.standin_weights(directory)
    return directory


def test_standin_weights_are_cached_with_their_hash(standin_dir):
    weights = extractor.standin_weights(standin_dir)
    data = weights.path.read_bytes()
    assert weights.kind == "standin" and weights.path.name == extractor.STANDIN_FILE
    assert weights.sha256 == hashlib.sha256(data).hexdigest()
    assert (standin_dir / (extractor.STANDIN_FILE + ".sha256")).read_text().strip() == weights.sha256
    assert extractor.resolve_weights("standin", standin_dir=standin_dir) == weights


def test_standin_weights_are_deterministic_and_not_default_init(standin_dir):
    saved = torch.load(standin_dir / extractor.STANDIN_FILE, weights_only=True)
    fresh = extractor.standin_state_dict(extractor.STANDIN_SEED)
    assert saved.keys() == fresh.keys()
    assert all(torch.equal(saved[k], fresh[k]) for k in saved)
    conv = saved["Conv2d_2b_3x3.conv.weight"]  # 64 x 32 x 3 x 3
    fan_in = conv[0].numel()
    assert conv.std().item() == pytest.approx((fan_in * (0.5 - 0.5 / np.pi)) ** -0.5, rel=0.05)
    assert conv.sum(dim=(1, 2, 3)).abs().max().item() < 1e-4  # zero-sum filters


def test_corrupted_standin_cache_is_reported(tmp_path, standin_dir):
    for name in (extractor.STANDIN_FILE, extractor.STANDIN_FILE + ".sha256"):
        (tmp_path / name).write_bytes((standin_dir / name).read_bytes())
    with open(tmp_path / extractor.STANDIN_FILE, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(SaganError, match=r"inception-standin-v1-seed0\.pth: sha256 [0-9a-f]{64} differs from the "
                                         r"recorded [0-9a-f]{64} \(hint: delete"):
        extractor.standin_weights(tmp_path)


def test_weights_path_with_wrong_hash_names_both_hashes(tmp_path):
    fake = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    fake.write_bytes(b"not the inception weights")
    digest = hashlib.sha256(b"not the inception weights").hexdigest()
    with pytest.raises(SaganError) as exc:
        extractor.resolve_weights(str(fake), paths.STANDIN_WEIGHTS_DIR)
    assert str(exc.value).startswith(f"{fake}: sha256 {digest} does not match the official Inception weights "
                                     f"(sha256 6726825d...)")
    assert "\n" not in str(exc.value)


def test_weights_path_missing(tmp_path):
    with pytest.raises(SaganError, match=r"fid.weights: file not found: .*nope\.pth \(hint: use the official "
                                         r"weights-inception-2015-12-05-6726825d\.pth"):
        extractor.resolve_weights(str(tmp_path / "nope.pth"), paths.STANDIN_WEIGHTS_DIR)


@pytest.fixture
def hub_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints" / extractor.OFFICIAL_FILE


def test_auto_weights_offline_names_file_place_and_url(hub_dir, monkeypatch):
    url = "http://127.0.0.1:9/weights-inception-2015-12-05-6726825d.pth"  # discard port: refused
    monkeypatch.setattr(extractor, "URL_INCEPTION_V3", url)
    with pytest.raises(SaganError) as exc:
        extractor.resolve_weights("auto", paths.STANDIN_WEIGHTS_DIR)
    message = str(exc.value)
    assert message.startswith(f"{hub_dir}: official Inception weights missing and the download failed (")
    assert f"fetch {url} elsewhere and put it at {hub_dir}" in message and "\n" not in message
    assert not hub_dir.exists()


@pytest.fixture
def served_file(tmp_path):
    """(url, bytes) of a file served by a local HTTP server."""
    body = b"pretend weights " * 1000
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / extractor.OFFICIAL_FILE).write_bytes(body)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tmp_path / "served"), **kw)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/{extractor.OFFICIAL_FILE}", body
    server.shutdown()


def test_download_with_wrong_hash_leaves_nothing(hub_dir, served_file, monkeypatch):
    url, body = served_file
    monkeypatch.setattr(extractor, "URL_INCEPTION_V3", url)
    with pytest.raises(SaganError, match=f"{url}: downloaded sha256 {hashlib.sha256(body).hexdigest()} does not "
                                         f"match the official Inception weights"):
        extractor.resolve_weights("auto", paths.STANDIN_WEIGHTS_DIR)
    assert list(hub_dir.parent.iterdir()) == []  # no partial or temporary file left


def test_download_moves_checked_file_into_place(hub_dir, served_file, monkeypatch):
    url, body = served_file
    digest = hashlib.sha256(body).hexdigest()
    monkeypatch.setattr(extractor, "URL_INCEPTION_V3", url)
    monkeypatch.setattr(extractor, "OFFICIAL_SHA256_PREFIX", digest[:8])
    weights = extractor.resolve_weights("auto", paths.STANDIN_WEIGHTS_DIR)
    assert weights == extractor.Weights(hub_dir, digest, "official")
    assert hub_dir.read_bytes() == body
    assert extractor.resolve_weights("auto", paths.STANDIN_WEIGHTS_DIR) == weights  # cached: found without the network


def _plant_weights(path: Path, marker: Path) -> str:
    """A torch.save file whose pickle runs _Payload when unpickled without weights_only; its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"Conv2d_1a_3x3.conv.weight": PicklePayload(marker)}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_planted_standin_weights_with_a_pickle_payload_are_refused(tmp_path):
    marker = tmp_path / "payload-ran"
    planted = tmp_path / "cache" / extractor.STANDIN_FILE
    digest = _plant_weights(planted, marker)
    planted.with_name(planted.name + ".sha256").write_text(digest + "\n")  # a matching record beside it
    weights = extractor.standin_weights(tmp_path / "cache")
    assert weights.sha256 == digest
    with pytest.raises(SaganError) as exc:
        extractor.load_extractor(weights, torch.device("cpu"))
    assert not marker.exists()
    message = str(exc.value)
    assert message.startswith(f"{planted}: holds objects other than tensors") and "weights_only=True" in message
    assert "\n" not in message


def test_official_weights_with_a_pickle_payload_are_refused(tmp_path, monkeypatch):
    """The official file's only hash check is the 8-digit prefix: the safe load is the guard."""
    marker = tmp_path / "payload-ran"
    planted = tmp_path / extractor.OFFICIAL_FILE
    digest = _plant_weights(planted, marker)
    monkeypatch.setattr(extractor, "OFFICIAL_SHA256_PREFIX", digest[:8])  # a forged prefix match
    weights = extractor.resolve_weights(str(planted), paths.STANDIN_WEIGHTS_DIR)
    with pytest.raises(SaganError, match=rf"^{planted}: holds objects other than tensors[^\n]*$"):
        extractor.load_extractor(weights, torch.device("cpu"))
    assert not marker.exists()


def test_weights_that_are_not_an_inception_state_dict_are_one_line(tmp_path):
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3)}, wrong)
    weights = extractor.Weights(wrong, hashlib.sha256(wrong.read_bytes()).hexdigest(), "official")
    with pytest.raises(SaganError) as exc:
        extractor.load_extractor(weights, torch.device("cpu"))
    assert str(exc.value).startswith(f"{wrong}: not InceptionV3 weights (") and "\n" not in str(exc.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 64)
    weights = extractor.Weights(garbage, hashlib.sha256(garbage.read_bytes()).hexdigest(), "official")
    with pytest.raises(SaganError, match=rf"^{garbage}: not a readable weights file \([^\n]*$"):
        extractor.load_extractor(weights, torch.device("cpu"))


def test_weights_are_only_ever_unpickled_safely(standin_dir, monkeypatch):
    """Neither the stand-in recipe nor the extractor lets torch-fidelity unpickle anything itself."""
    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    extractor.standin_state_dict(extractor.STANDIN_SEED)
    model = extractor.load_extractor(extractor.standin_weights(standin_dir), torch.device("cpu"))
    assert calls == [True]  # one load: ours, of the hash-checked weights
    saved = real_load(standin_dir / extractor.STANDIN_FILE, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert isinstance(model, extractor.FeatureExtractorInceptionV3) and not model.training


def test_device_param_errors():
    assert resolve_device("cpu", param="fid.device") == torch.device("cpu")
    with pytest.raises(SaganError, match="fid.device: unknown device 'gpu0'"):
        resolve_device("gpu0", param="fid.device")
    if not torch.cuda.is_available():
        assert resolve_device("auto", param="fid.device") == torch.device("cpu")
        with pytest.raises(SaganError, match=r"^fid.device: 'cuda:1' requested but CUDA is not available "
                                             r"\(hint: set fid.device: auto or cpu\)$"):
            resolve_device("cuda:1", param="fid.device")


# --- the stand-in extractor on images -----------------------------------------------------------


@pytest.fixture(scope="module")
def standin_extractor(standin_dir):
    torch.manual_seed(0)
    return extractor.load_extractor(extractor.standin_weights(standin_dir), torch.device("cpu"))


def test_standin_features_are_not_degenerate(standin_extractor):
    features = extractor.extract_features(standin_extractor, prepared_faces(range(6)))
    assert features.shape == (6, 2048) and features.dtype == torch.float32
    assert torch.isfinite(features).all()
    # PyTorch's default init gives ~1e-8 here; the stand-in keeps features varying across images
    assert features.std(dim=0).mean().item() > 0.01
    assert features.mean().item() > 0.05


def _summary(features: torch.Tensor):
    stats = RunningStats(2048)
    stats.update(features)
    return stats.mean, stats.cov


@pytest.mark.slow
def test_standin_fid_ranks_real_shifted_noise(standin_extractor):
    n = 16
    real = prepared_faces(range(2 * n))
    shifted = real[n:].to(torch.int16)
    shifted[:, 0] += 20  # a mild colour cast: redder, less blue
    shifted[:, 2] -= 20
    noise = torch.randint(0, 256, real[n:].shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    half_a = _summary(extractor.extract_features(standin_extractor, real[:n]))
    fid = {name: frechet_distance(*half_a, *_summary(extractor.extract_features(standin_extractor, images)))
           for name, images in (("real", real[n:]), ("shifted", shifted.clamp(0, 255).to(torch.uint8)),
                                ("noise", noise))}
    # measured: real 8.6, shifted 35.5, noise 83
    assert 2 * fid["real"] < fid["shifted"] and 2 * fid["shifted"] < fid["noise"], fid


def _precision_recall_by_loops(generated: np.ndarray, real: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Kynkäänniemi et al.'s definition, one sample at a time: a sample counts when it lies within
    the k-th-nearest-neighbour radius of some sample of the other set (self excluded)."""
    def radii(points):
        return [sorted(np.linalg.norm(points - p, axis=1))[k] for p in points]  # [0] is the point itself

    def share_inside(samples, centres):
        r = radii(centres)
        return np.mean([any(np.linalg.norm(s - c) <= rc for c, rc in zip(centres, r)) for s in samples])

    return float(share_inside(generated, real)), float(share_inside(real, generated))


def test_precision_recall_matches_the_definition():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((40, 5))
    generated = np.concatenate([rng.standard_normal((20, 5)), rng.standard_normal((20, 5)) + 3.0])  # half off
    expected = _precision_recall_by_loops(generated, real)
    assert precision_recall(generated, real) == pytest.approx(expected)
    assert 0.3 < expected[0] < 0.8  # the shifted half falls outside the real manifold
    assert precision_recall(real, real) == (1.0, 1.0)
    with pytest.raises(ValueError, match="more than 3 features per set"):
        precision_recall(real[:3], real)


def test_fid_from_fewer_rows_than_dimensions_equals_torch_fidelitys():
    """The n x n route (rows1) against torch-fidelity's 2048 x 2048 eigenvalues, on features with
    Inception's dimension and a reference covariance of full rank."""
    n = 64  # the smoke profile's sample count
    rng = np.random.default_rng(n)
    mixing = rng.standard_normal((2048, 2048)) * 0.05
    rows = np.maximum(rng.standard_normal((n, 2048)) @ mixing, 0)
    reference = np.maximum(rng.standard_normal((2100, 2048)) @ mixing + 0.1, 0)
    stats = RunningStats(2048)
    stats.update(rows.astype(np.float32))
    mu2, sigma2 = reference.mean(0), np.cov(reference, rowvar=False)
    fast = frechet_distance(stats.mean, stats.cov, mu2, sigma2, rows.astype(np.float32))
    # Not to the last digit: for the 2048 - (n - 1) eigenvalues of sigma1 sigma2 that are 0, the
    # general solver returns rounding noise (~1e-13) whose square roots it adds (~1e-4 in all).
    assert fast == pytest.approx(frechet_distance(stats.mean, stats.cov, mu2, sigma2), rel=1e-6)
