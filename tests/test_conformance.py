"""Every registered codec passes the conformance kit (tests/conformance.py) through the workflow's coding path:
round trip within its declared bound, BPFP from the files' sizes, the same bytes twice, damaged bitstreams
refused naming the file. A codec added to the registry is in these tests at once, and fails them until its
parameters are in the kit's TABLE; VTM runs when LAMOFC_VTM_DIR points at its binaries."""

from __future__ import annotations

import conformance as kit
import pytest

from lamofc_lib.codecs import REGISTRY

NAMES = sorted(REGISTRY)


@pytest.fixture(scope="module", params=NAMES)
def coded(request, tmp_path_factory):
    """A codec configured by its kit parameters (a trained one trained once here), and the workflow's code job
    on the kit's smooth features: (name, params, codec, folder, features, frames, bitstreams, reconstructed)."""
    name = request.param
    try:
        params = kit.parameters(name)
    except LookupError as err:
        pytest.fail(str(err))
    if reason := params.missing():
        pytest.skip(f"{name}: {reason}")
    folder = tmp_path_factory.mktemp(f"conformance-{name}")
    features = kit.smooth_features(folder / "features.zarr")
    codec, frames = kit.configured_codec(name, params, features, folder)
    bits, reconstructed = kit.code(codec, frames, params.point, folder)
    return name, params, codec, folder, features, frames, bits, reconstructed


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_codec_has_conformance_parameters(name):
    assert name in kit.TABLE, (
        f"codec '{name}' is registered but has no conformance parameters: add them to TABLE in tests/conformance.py"
    )
    params = kit.TABLE[name]
    assert params.max_rmse > 0 and params.decoder_detects <= set(kit.DAMAGES)
    assert (params.training is not None and params.sizes is not None) == REGISTRY[name].trained


def test_a_codec_without_parameters_fails_saying_what_to_add():
    with pytest.raises(LookupError, match=r"'newcodec' is registered but has no conformance parameters: add"):
        kit.parameters("newcodec")


def test_round_trip_is_within_the_declared_bound(coded, tmp_path):
    name, params, codec, _, _, frames, bits, reconstructed = coded
    errors = kit.check_round_trip(codec, frames, bits, reconstructed, params.max_rmse, tmp_path)
    assert len(errors) == kit.SAMPLES


def test_reported_bpfp_is_the_bitstream_files_bits_over_the_feature_points(coded):
    _, _, _, _, features, _, bits, _ = coded
    bpfp = kit.check_rate(features, bits)
    assert len(bpfp) == kit.SAMPLES and all(b > 0 for b in bpfp)


def test_encoding_twice_gives_the_same_bytes(coded, tmp_path):
    _, params, codec, _, _, frames, bits, _ = coded
    kit.check_deterministic(codec, frames, params.point, bits, tmp_path / "again")


@pytest.mark.parametrize("damage", kit.DAMAGES)
def test_a_damaged_bitstream_is_refused_naming_the_file(coded, tmp_path, damage):
    _, params, codec, _, _, _, bits, _ = coded
    kit.check_damage(codec, bits, damage, params.decoder_detects, tmp_path)
