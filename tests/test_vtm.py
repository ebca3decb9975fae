"""The VTM adapter: against real VTM binaries when LAMOFC_VTM_DIR points at them; its configuration errors
always."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml

from lamofc_lib.codecs import CodecError, get_codec
from lamofc_lib.codecs.vtm import resolve_tools
from lamofc_lib.config import ConfigError, validate

REPO = Path(__file__).resolve().parents[1]
needs_vtm = pytest.mark.skipif(
    not os.environ.get("LAMOFC_VTM_DIR"),
    reason="VTM is not installed: set LAMOFC_VTM_DIR to a folder with VTM-23.3's EncoderAppStatic/DecoderAppStatic "
    "(and encoder_intra_vtm.cfg there or in ../cfg)",
)


def _config(tmp_path, **vtm) -> dict:
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["run"]["codecs"] = ["vvenc", "vtm"]
    config["codecs"]["vtm"] = {"points": [37], "truncation": "vvc", **vtm}
    return config


def test_missing_vtm_binaries_stop_at_start_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv("LAMOFC_VTM_DIR", raising=False)
    with pytest.raises(ConfigError, match="config key codecs.vtm.encoder: not set and \\$LAMOFC_VTM_DIR"):
        validate(_config(tmp_path))
    with pytest.raises(ConfigError, match="codecs.vtm.encoder: .*no-such-encoder does not exist"):
        validate(_config(tmp_path, encoder=str(tmp_path / "no-such-encoder"), decoder="x", cfg="y"))


def test_a_program_that_is_not_vtm_is_refused_at_start(tmp_path):
    fake = tmp_path / "EncoderAppStatic"
    fake.write_text("#!/bin/sh\necho 'some other encoder 1.0'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    cfg = tmp_path / "encoder_intra_vtm.cfg"
    cfg.write_text("")
    with pytest.raises(ConfigError, match="config key codecs.vtm.encoder: .* is not VTM"):
        validate(_config(tmp_path, encoder=str(fake), decoder=str(fake), cfg=str(cfg)))


@needs_vtm
def test_vtm_round_trip_and_bpfp(tmp_path):
    tools = resolve_tools({})
    codec = get_codec("vtm", {"bit_depth": 10})
    assert codec.version().startswith("VTM encoder 23.3")
    rng = np.random.default_rng(0)
    frame = (np.cumsum(rng.normal(0, 3, (37, 99)), axis=1) % 1024).astype(np.uint16)  # odd sizes: padded by VTM
    bitstreams = {}
    for qp in (22, 42):
        path = tmp_path / f"{qp}.bin"
        codec.encode(frame, str(qp), path, tmp_path)
        decoded = codec.decode(path, frame.shape, tmp_path)
        assert decoded.shape == frame.shape and decoded.dtype == np.uint16
        bitstreams[qp] = (path.stat().st_size, float(np.mean((decoded.astype(float) - frame) ** 2)))
    assert bitstreams[42][0] < bitstreams[22][0] and bitstreams[42][1] > bitstreams[22][1]
    assert tools["cfg"].name == "encoder_intra_vtm.cfg"


@needs_vtm
def test_vtm_rejects_a_truncated_bitstream(tmp_path):
    codec = get_codec("vtm", {"bit_depth": 10})
    frame = np.full((16, 24), 500, dtype=np.uint16)
    path = tmp_path / "a.bin"
    codec.encode(frame, "32", path, tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CodecError, match="does not decode|corrupt or truncated"):
        codec.decode(path, frame.shape, tmp_path)


def _stand_in(folder: Path, body: str) -> dict:
    """A VTM stand-in (VTM's binaries cannot exist here) that prints the banner for --help and otherwise runs
    `body`: enough to exercise how the adapter runs a tool that hangs or crashes."""
    folder.mkdir()
    for name, role in (("EncoderAppStatic", "Encoder"), ("DecoderAppStatic", "Decoder")):
        path = folder / name
        path.write_text(
            f"#!/bin/sh\nif [ \"$1\" = --help ]; then echo 'VTM {role} Version 23.3 [Linux]'; exit 0; fi\n{body}\n"
        )
        path.chmod(0o755)
    (folder / "encoder_intra_vtm.cfg").write_text("")
    return {"encoder": str(folder / "EncoderAppStatic"), "decoder": str(folder / "DecoderAppStatic"),
            "cfg": str(folder / "encoder_intra_vtm.cfg")}  # fmt: skip


def test_a_hanging_codec_tool_is_killed_at_its_timeout_with_its_output_in_the_error(tmp_path):
    import time

    tools = _stand_in(tmp_path / "vtm", "echo 'POC 0 started'; sleep 30")
    codec = get_codec("vtm", tools, timeout=1)
    frame = np.zeros((8, 16), np.uint16)
    start = time.monotonic()
    with pytest.raises(CodecError, match=r"VTM encoding of .* did not finish within 1 s \(the codec's timeout\)") as e:
        codec.encode(frame, "37", tmp_path / "out.bin", tmp_path)
    assert time.monotonic() - start < 20 and "POC 0 started" in str(e.value)
    assert "[killed after 1 s]" in (tmp_path / "vtm-encoder.log").read_text()


def test_a_crashing_codec_tool_fails_with_its_exit_code_and_output(tmp_path):
    tools = _stand_in(tmp_path / "vtm", "echo 'ERROR: out of memory' >&2; exit 3")
    codec = get_codec("vtm", tools, timeout=60)
    with pytest.raises(CodecError, match=r"VTM encoding of .* failed \(exit 3\)") as e:
        codec.encode(np.zeros((8, 16), np.uint16), "37", tmp_path / "out.bin", tmp_path)
    assert "ERROR: out of memory" in str(e.value)


def test_the_timeout_is_a_setting_that_codes_nothing(tmp_path):
    from lamofc_lib import workflow as wf

    config = validate(yaml.safe_load((REPO / "config" / "demo.yaml").read_text()))
    before = wf.codec_settings(config, "vvenc")
    config["codecs"]["vvenc"]["timeout"] = 600
    assert wf.codec_settings(config, "vvenc") == before  # the jobs' params: no rerun
    with pytest.raises(ConfigError, match="codecs.vvenc.timeout"):
        raw = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
        raw["codecs"]["vvenc"]["timeout"] = 0
        validate(raw)
