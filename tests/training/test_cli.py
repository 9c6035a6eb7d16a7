"""emostream-train argument handling: help, clear errors and exit codes (no training here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.cli import main


def test_help_documents_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "evaluate", "ablate", "export"):
        assert command in out


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--config", str(tmp_path / "c.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    (tmp_path / "c.toml").write_text("")
    assert main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_flags_are_validated_like_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[training.optim]\nepochs = 3\n")
    assert main(["train", "--config", str(cfg), "--epochs", "0"]) == 2
    assert "training.optim.epochs = 0 is out of range" in capsys.readouterr().err
    cfg.write_text("[training.optim]\nepoch = 3\n")
    assert main(["train", "--config", str(cfg)]) == 2
    assert "unknown key 'training.optim.epoch'" in capsys.readouterr().err
