"""The `emostream` command line: help, config errors, and `devices` without PortAudio."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
from pathlib import Path

import pytest

from stream.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "devices", "evaluate"):
        assert command in out


def test_console_scripts_answer_help() -> None:
    bindir = Path(sys.executable).parent
    for script in ("emostream", "emostream-train"):
        exe = bindir / script
        if not exe.exists():
            pytest.skip(f"{script} is not installed in this environment (pip install -e .)")
        result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        assert "usage:" in result.stdout


def test_python_dash_m_stream_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stream", "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )
    assert result.returncode == 0
    assert "devices" in result.stdout


def test_config_error_exits_2_and_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[vad]\naggressiveness = 9\n")
    assert main(["run", "--config", str(bad)]) == 2
    assert "vad.aggressiveness = 9 is out of range" in capsys.readouterr().err


def test_cli_flags_are_validated_like_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--port", "99999"]) == 2
    assert "server.port" in capsys.readouterr().err


def test_devices_without_portaudio_says_so(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # sounddevice finds libportaudio through ctypes.util.find_library; make it find nothing, as on a
    # machine without the library, and import sounddevice afresh.
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    real_find = ctypes.util.find_library
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None if "portaudio" in name else real_find(name))
    assert main(["devices"]) == 1
    err = capsys.readouterr().err
    assert "PortAudio is not available" in err
    assert "libportaudio2" in err
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)


def test_devices_with_portaudio_lists_or_explains(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sounddevice", reason="PortAudio is not installed here")
    code = main(["devices"])
    captured = capsys.readouterr()
    if code == 0:
        assert "default input" in captured.out
    else:
        assert "no input device" in captured.err or "PortAudio" in captured.err
