"""Input device discovery through PortAudio (sounddevice), with clear errors when it is missing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["AudioDevice", "DeviceError", "find_input_device", "list_input_devices", "load_sounddevice"]


class DeviceError(RuntimeError):
    """PortAudio is missing, or no matching input device exists."""


@dataclass(frozen=True, slots=True)
class AudioDevice:
    index: int
    name: str
    hostapi: str
    max_input_channels: int
    default_sample_rate_hz: float
    is_default: bool


def load_sounddevice() -> Any:
    """Import sounddevice, turning a missing PortAudio library into :class:`DeviceError`."""
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise DeviceError(
            f"PortAudio is not available ({exc}). Install it with `sudo apt-get install libportaudio2` "
            "(Debian/Ubuntu) or `brew install portaudio` (macOS); replaying files works without it."
        ) from exc
    return sounddevice


def list_input_devices() -> list[AudioDevice]:
    """Every device with at least one input channel."""
    sd = load_sounddevice()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
        default_in = sd.default.device[0]
    except Exception as exc:  # PortAudio reports failures through its own exception type
        raise DeviceError(f"PortAudio could not list devices: {exc}") from exc
    found = []
    for index, dev in enumerate(devices):
        if int(dev["max_input_channels"]) <= 0:
            continue
        found.append(
            AudioDevice(
                index=index,
                name=str(dev["name"]),
                hostapi=str(hostapis[dev["hostapi"]]["name"]),
                max_input_channels=int(dev["max_input_channels"]),
                default_sample_rate_hz=float(dev["default_samplerate"]),
                is_default=index == default_in,
            )
        )
    return found


def find_input_device(spec: str) -> AudioDevice:
    """Pick an input device by index (``"3"``), exact name or name substring; empty = the default."""
    devices = list_input_devices()
    if not devices:
        raise DeviceError("no audio input device found (PortAudio lists none with input channels)")
    if not spec or spec in ("mic", "default"):
        for dev in devices:
            if dev.is_default:
                return dev
        return devices[0]
    if spec.isdigit():
        for dev in devices:
            if dev.index == int(spec):
                return dev
        raise DeviceError(f"no input device with index {spec}; `emostream devices` lists them")
    exact = [d for d in devices if d.name == spec]
    partial = [d for d in devices if spec.lower() in d.name.lower()]
    matches = exact or partial
    if not matches:
        raise DeviceError(f"no input device named like {spec!r}; `emostream devices` lists them")
    if len(matches) > 1 and not exact:
        names = ", ".join(f"{d.index}: {d.name}" for d in matches)
        raise DeviceError(f"input device {spec!r} is ambiguous ({names}); give its index")
    return matches[0]
