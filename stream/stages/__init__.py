"""The pipeline's stages: VAD, the sans-I/O segmenter, Whisper transcription, classification."""
