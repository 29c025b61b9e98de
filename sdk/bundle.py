"""Model bundles: a folder with manifest.json plus the files it lists, each with its sha256.

The manifest repeats the signal constants the codec was trained with; loading refuses
a bundle whose constants differ from this sdk's (`spec.py`), whose files are missing or
altered, or whose manifest is malformed, with one clear message each.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from . import spec
from .entropy import EntropyModel
from .errors import BundleError, CodecMismatchError
from .spec import TokenLayout
from .tokenlm import TokenLM, load_entropy
from .voice import VoiceSpec

FORMAT = "gacflow-bundle/1"
MANIFEST = "manifest.json"
DEFAULT_BUNDLE = Path(__file__).resolve().parent / "bundles" / "default"

SIGNAL_KEYS = {
    "sample_rate": spec.SAMPLE_RATE,
    "frame_rate": spec.FRAME_RATE,
    "hop": spec.HOP,
    "win": spec.WIN,
    "n_fft": spec.N_FFT,
    "n_mels": spec.N_MELS,
    "mels_per_token": spec.MELS_PER_TOKEN,
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def signal_section() -> dict[str, Any]:
    """The constants a manifest must carry, as this sdk defines them."""
    return dict(SIGNAL_KEYS)


def layout_section(layout: TokenLayout) -> dict[str, Any]:
    return {
        "base_levels": list(layout.base_levels),
        "enh_levels": list(layout.enh_levels),
        "modes": {
            name: {"levels": list(m.levels), "bits": m.bits, "token_bitrate": m.token_bitrate}
            for name, m in layout.modes.items()
        },
    }


@dataclass
class Bundle:
    """A verified bundle on disk."""

    root: Path
    manifest: dict[str, Any]

    @property
    def codec_id(self) -> str:
        return str(self.manifest["codec"]["id"])

    @property
    def layout(self) -> TokenLayout:
        t = self.manifest["token_layout"]
        return TokenLayout(tuple(t["base_levels"]), tuple(t["enh_levels"]))

    @property
    def voice(self) -> VoiceSpec | None:
        """How this codec's voice code is computed (None: the codec sends none)."""
        raw = self.manifest.get("voice")
        return None if raw is None else VoiceSpec.from_manifest(raw)

    @cached_property
    def entropy(self) -> EntropyModel | TokenLM | None:
        """The model that codes this codec's packets (None: tokens are sent plain)."""
        raw = self.manifest.get("entropy")
        return None if raw is None else load_entropy(raw, self.layout)

    @property
    def model_config(self) -> dict[str, Any]:
        return dict(self.manifest.get("model", {}))

    def decoder_entry(self, name: str | None = None) -> dict[str, Any]:
        """A decoder's manifest entry (file, config, ...); default: the bundle's default."""
        decoders = self.model_config.get("decoders") or {}
        size = name or self.model_config.get("default_decoder")
        if size not in decoders:
            raise BundleError(f"bundle {self.root} has no decoder {size!r} "
                              f"(it has {sorted(decoders)})")
        return dict(decoders[size])

    def has(self, name: str) -> bool:
        return name in self.manifest["files"]

    def path(self, name: str) -> Path:
        """Path of a listed file; BundleError if the bundle does not ship it."""
        if name not in self.manifest["files"]:
            shipped = ", ".join(sorted(self.manifest["files"])) or "nothing"
            raise BundleError(f"bundle {self.root} has no {name} (it ships {shipped})")
        return self.root / name

    def read_verified(self, name: str) -> bytes:
        """A file's bytes, re-checked against the manifest: what a runtime loads is exactly
        what was verified, even if the file changed after `load`."""
        path = self.path(name)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BundleError(f"bundle {self.root}: cannot read {name} ({exc.strerror})") from exc
        if hashlib.sha256(data).hexdigest() != self.manifest["files"][name]["sha256"]:
            raise _mismatch(self.root, name)
        return data

    def check_codec(self, codec_id: str) -> None:
        """Refuse tokens of another codec."""
        if codec_id != self.codec_id:
            raise CodecMismatchError(
                f"tokens are from codec {codec_id!r}, but bundle {self.root} holds "
                f"{self.codec_id!r}; decode with the bundle that encoded them"
            )

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, verify: bool = True) -> Bundle:
        """Load and verify a bundle; `None` means $GACFLOW_BUNDLE or the default bundle."""
        root = Path(path or os.environ.get("GACFLOW_BUNDLE") or DEFAULT_BUNDLE)
        mpath = root / MANIFEST
        if not root.is_dir():
            raise BundleError(f"bundle {root}: no such directory")
        if not mpath.is_file():
            raise BundleError(f"bundle {root}: no {MANIFEST}")
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"bundle {root}: {MANIFEST} is not valid JSON ({exc})") from exc
        _check_manifest(root, manifest)
        if verify:
            for name, entry in manifest["files"].items():
                f = root / name
                if not f.is_file():
                    raise BundleError(f"bundle {root}: listed file {name} is missing")
                if sha256_file(f) != entry["sha256"]:
                    raise _mismatch(root, name)
        return cls(root, manifest)


def _mismatch(root: Path, name: str) -> BundleError:
    return BundleError(f"bundle {root}: {name} does not match its sha256 in the manifest "
                       "(corrupted or tampered); re-export or re-download it")


def _check_manifest(root: Path, m: Any) -> None:
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise BundleError(f"bundle {root}: manifest format is not {FORMAT!r}")
    for key in ("codec", "token_layout", "files", "signal"):
        if key not in m:
            raise BundleError(f"bundle {root}: manifest lacks {key!r}")
    if not isinstance(m["files"], dict) or not all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in m["files"].values()
    ):
        raise BundleError(f"bundle {root}: manifest 'files' must map names to {{sha256: ...}}")
    for name in m["files"]:
        if "/" in name or "\\" in name or name.startswith("."):
            raise BundleError(f"bundle {root}: file name {name!r} is not a plain file name")
    if not isinstance(m["codec"], dict) or "id" not in m["codec"]:
        raise BundleError(f"bundle {root}: manifest codec section lacks 'id'")
    for key, want in SIGNAL_KEYS.items():
        got = m["signal"].get(key) if isinstance(m["signal"], dict) else None
        if got != want:
            raise BundleError(
                f"bundle {root}: trained with {key}={got}, this gacflow uses {want}; "
                "use a matching gacflow version"
            )
    try:
        t = m["token_layout"]
        TokenLayout(tuple(int(x) for x in t["base_levels"]), tuple(int(x) for x in t["enh_levels"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"bundle {root}: token_layout is malformed ({exc})") from exc
    if m.get("voice") is not None:
        try:
            VoiceSpec.from_manifest(m["voice"])
        except BundleError as exc:
            raise BundleError(f"bundle {root}: {exc}") from exc
    if m.get("entropy") is not None:
        t = m["token_layout"]
        layout = TokenLayout(tuple(t["base_levels"]), tuple(t["enh_levels"]))
        try:
            load_entropy(m["entropy"], layout)
        except BundleError as exc:
            raise BundleError(f"bundle {root}: {exc}") from exc


# The sections write_manifest computes itself; anything else in a manifest (e.g. the voice
# basis) is carried over when a bundle is rewritten.
MANIFEST_OWN_KEYS = ("format", "codec", "content_hash", "signal", "token_layout", "model",
                     "files")


def manifest_extras(manifest: dict[str, Any]) -> dict[str, Any]:
    """The sections of `manifest` that write_manifest does not compute (pass as `extra`)."""
    return {k: v for k, v in manifest.items() if k not in MANIFEST_OWN_KEYS}


def write_manifest(
    root: Path,
    codec_name: str,
    codec_id: str,
    layout: TokenLayout,
    model_config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Hash every file in `root` (except the manifest) and write manifest.json."""
    files = {
        f.name: {"sha256": sha256_file(f), "bytes": f.stat().st_size}
        for f in sorted(root.iterdir())
        if f.is_file() and f.name != MANIFEST
    }
    content = hashlib.sha256(
        "".join(f"{k}:{v['sha256']}\n" for k, v in files.items()).encode()
    ).hexdigest()
    from . import __version__

    manifest = {
        "format": FORMAT,
        "codec": {"name": codec_name, "id": codec_id, "gacflow_version": __version__},
        "content_hash": content,
        "signal": signal_section(),
        "token_layout": layout_section(layout),
        "model": model_config,
        "files": files,
        **(extra or {}),
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
