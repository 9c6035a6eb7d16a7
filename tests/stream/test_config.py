"""Config loading: every error names the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.config import Config, ConfigError, load_config
from training.settings import load_training_config

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_shipped_config_equals_the_defaults() -> None:
    # config.toml documents the defaults: if the two drift, one of them is lying.
    shipped = load_config(ROOT / "config.toml")
    assert shipped == Config()


def test_no_file_gives_defaults() -> None:
    cfg = load_config(None)
    assert cfg.vad.frame_ms == 30
    assert cfg.asr.model == "base"


def test_partial_file_overrides_only_its_keys(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "[vad]\naggressiveness = 3\n[server]\nport = 0\n"))
    assert cfg.vad.aggressiveness == 3
    assert cfg.server.port == 0
    assert cfg.vad.frame_ms == 30


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[vad]\naggresiveness = 2\n", "vad.aggresiveness"),
        ("[vadd]\nframe_ms = 30\n", "[vadd]"),
        ("[training.optim]\nlearning_rate = 1\n", "training.optim.learning_rate"),
        ("[server]\nport = 'eighty'\n", "server.port must be an integer"),
        ("[server]\nenabled = 1\n", "server.enabled must be true or false"),
        ("[vad]\naggressiveness = 7\n", "vad.aggressiveness = 7 is out of range; allowed range [0, 3]"),
        ("[server]\nport = 70000\n", "server.port = 70000 is out of range; allowed range [0, 65535]"),
        ("[vad]\nframe_ms = 25\n", "vad.frame_ms = 25"),
        ("[audio]\nreplay_speed = 0\n", "audio.replay_speed = 0.0 is out of range; allowed range (0.0, 1000.0]"),
        ("[audio]\nreplay_speed = nan\n", "audio.replay_speed = nan is not finite"),
        ("[asr]\ndevice = 'gpu'\n", "asr.device = 'gpu' is not allowed"),
        ("[vad]\nengine = 'magic'\n", "choose one of webrtc, silero"),
        ("[training.optim]\nmode = 'video'\n", "training.optim.mode"),
        ("[training.data]\nravdess_test_actors = ['x']\n", "training.data.ravdess_test_actors[0]"),
        ("[server]\nallowed_origins = 'http://x'\n", "server.allowed_origins must be a list"),
        ("vad = 3\n", "[vad] must be a table"),
        ("[classifier]\naudio_norm = 'voice'\n", "classifier.audio_norm"),
        ("[classifier]\ntext_dtype = 'float16'\n", "classifier.text_dtype"),
        ("[audio]\nmic_retry_initial_s = 5.0\nmic_retry_max_s = 1.0\n", "audio.mic_retry_max_s"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text))
    assert needle in str(err.value)


def test_overrides_are_checked_like_file_values() -> None:
    assert load_config(None, **{"asr.model": "tiny.en"}).asr.model == "tiny.en"
    with pytest.raises(ConfigError, match="server.port"):
        load_config(None, **{"server.port": -1})


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[vad\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "[classifier]\ncheckpoint = 'm/x.pt'\n"))
    assert cfg.resolve_path(cfg.classifier.checkpoint) == tmp_path / "m" / "x.pt"


def test_training_loader_accepts_service_sections_and_checks_its_own(tmp_path: Path) -> None:
    assert load_training_config(ROOT / "config.toml") == load_config(ROOT / "config.toml").training
    with pytest.raises(ConfigError, match="training.optim.epochs = 0 is out of range"):
        load_training_config(_write(tmp_path, "[asr]\nmodel = 'x'\n[training.optim]\nepochs = 0\n"))
    with pytest.raises(ConfigError, match=r"unknown section \[trainig\]"):
        load_training_config(_write(tmp_path, "[trainig]\nruns_dir = 'x'\n"))


def test_the_trainer_accepts_exactly_the_sections_the_service_validates() -> None:
    """One config.toml serves both programs: the trainer must not accept a section the service rejects."""
    import dataclasses

    from stream.config import Config
    from training.settings import SERVICE_SECTIONS

    service = {f.name for f in dataclasses.fields(Config)} - {"training", "base_dir"}
    assert service == SERVICE_SECTIONS


def test_ctranslate2_devices_keep_their_index() -> None:
    from training.device import ctranslate2_device
    from training.settings import ConfigError

    assert ctranslate2_device("cpu") == ("cpu", 0)
    assert ctranslate2_device("cuda") == ("cuda", 0)
    assert ctranslate2_device("cuda:2") == ("cuda", 2)
    assert ctranslate2_device("auto")[0] in ("cpu", "cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        ctranslate2_device("cuda:x")
