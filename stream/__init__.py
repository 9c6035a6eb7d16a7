"""emostream's live service: audio sources -> VAD -> Whisper -> emotion classifier -> events."""

__version__ = "0.1.0"
