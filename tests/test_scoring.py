"""Scoring: outputs against ground truth or against the uncompressed outputs, saved and reloaded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lamofc_lib.scoring import load_outputs, save_outputs
from lamofc_lib.tasks import get_task


def test_outputs_round_trip_labels_and_arrays(tmp_path):
    outputs = ["B", "<token 7>", np.arange(6, dtype=np.uint8).reshape(2, 3)]
    save_outputs(tmp_path / "o.npz", ["a", "b", "c"], {"": outputs})
    back = load_outputs(tmp_path / "o.npz", ["a", "b", "c"])
    assert back[:2] == ["B", "<token 7>"]
    np.testing.assert_array_equal(back[2], outputs[2])
    assert back[2].dtype == np.uint8


def test_outputs_of_other_samples_are_refused(tmp_path):
    save_outputs(tmp_path / "o.npz", ["a", "b"], {"": ["A", "B"]})
    with pytest.raises(ValueError, match="other samples"):
        load_outputs(tmp_path / "o.npz", ["a", "c"])
    with pytest.raises(ValueError, match="no outputs of variant 'layer.9'"):
        load_outputs(tmp_path / "o.npz", ["a", "b"], "layer.9")


def test_label_tasks_compare_exact_matches():
    task = get_task("csr")
    value, rows = task.compare(["A", "B", "<token 3>", "D"], ["A", "C", "C", "D"])
    assert value == 50.0
    assert [r["correct"] for r in rows] == [True, False, False, True]


def test_ground_truth_needs_labels():
    task = get_task("cls")
    manifest = pd.DataFrame({"sample_id": ["x", "y"], "label": ["3", ""]})
    with pytest.raises(ValueError, match=r"samples \['y'\] have no ground-truth label"):
        task.ground_truth(manifest)
    assert task.ground_truth(manifest.assign(label=["3", "4"])) == ["3", "4"]


def test_metric_options_reach_the_task_and_unknown_ones_are_refused():
    target = np.full((480, 640), 2.0, dtype=np.float32)
    prediction = target.copy()
    prediction[0:45, :] = 3.0  # 1 m off outside the Eigen crop's rows 45:471 only
    task = get_task("dpt")
    assert task.compare([prediction], [target])[0] == 0.0  # the reference's crop by default
    task.set_metric_options({"eigen_crop": False})
    inside = 45 / 480  # share of the valid pixels that are 1 m off
    assert task.compare([prediction], [target])[0] == pytest.approx(np.sqrt(inside), rel=1e-6)
    with pytest.raises(ValueError, match=r"task cls has no metric options \['eigen_crop'\]"):
        get_task("cls").set_metric_options({"eigen_crop": False})
