"""Bundles load only when complete, untampered and made for this sdk's signal constants."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gacflow.bundle import Bundle
from gacflow.errors import BundleError, CodecMismatchError


@pytest.fixture
def copy(bundle_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(bundle_dir, dst)
    return dst


def test_shipped_bundle_loads(bundle_dir: Path) -> None:
    b = Bundle.load(bundle_dir)
    assert b.codec_id and b.layout.mode("275").bits == 10 and b.layout.mode("175").bits == 6
    for entry in b.model_config["decoders"].values():
        assert entry["trained_steps"] > 0  # nothing shipped is untrained


def test_tampered_file_refused(copy: Path) -> None:
    f = copy / "encoder.pt"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        Bundle.load(copy)


def test_missing_file_refused(copy: Path) -> None:
    (copy / "encoder.pt").unlink()
    with pytest.raises(BundleError, match="missing"):
        Bundle.load(copy)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(format="other/9"), "format"),
        (lambda m: m["signal"].update(sample_rate=8000), "sample_rate"),
        (lambda m: m.pop("files"), "files"),
        (lambda m: m["files"].update({"../x": {"sha256": "0"}}), "plain file name"),
    ],
)
def test_bad_manifest_refused(copy: Path, edit, message) -> None:
    m = json.loads((copy / "manifest.json").read_text())
    edit(m)
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=message):
        Bundle.load(copy)


def test_garbage_manifest_and_missing_dir(copy: Path, tmp_path: Path) -> None:
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.load(copy)
    with pytest.raises(BundleError, match="no such directory"):
        Bundle.load(tmp_path / "nope")


def test_foreign_codec_refused(bundle_dir: Path) -> None:
    with pytest.raises(CodecMismatchError, match="other-codec"):
        Bundle.load(bundle_dir).check_codec("other-codec")
