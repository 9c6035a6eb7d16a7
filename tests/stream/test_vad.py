"""Frame classifiers on real espeak-ng speech: webrtcvad and the packaged Silero model."""

from __future__ import annotations

import numpy as np
import pytest

from stream.config import VADConfig
from stream.sources import to_int16
from stream.stages.vad import SileroVad, WebRtcVad, make_vad
from tests.helpers import make_dialogue


def frame_decisions(vad: WebRtcVad | SileroVad, pcm: np.ndarray) -> np.ndarray:
    n = vad.frame_samples
    return np.array([vad.is_speech(pcm[i : i + n]) for i in range(0, pcm.size - n + 1, n)])


def speech_mask(spans: tuple[tuple[int, int], ...], frames: int, frame_samples: int) -> np.ndarray:
    mask = np.zeros(frames, dtype=bool)
    for a, b in spans:
        mask[a // frame_samples : b // frame_samples + 1] = True
    return mask


@pytest.mark.parametrize("engine", ["webrtc", "silero"])
def test_frame_decisions_follow_the_speech(engine: str) -> None:
    talk = make_dialogue(["Hello there, how are you today?", "I am not happy about this at all."], gap_s=1.5)
    vad = make_vad(VADConfig(engine=engine))
    decided = frame_decisions(vad, to_int16(talk.audio))  # type: ignore[arg-type]
    truth = speech_mask(talk.spans, decided.size, vad.frame_samples)
    near = speech_mask(tuple((a - 4800, b + 4800) for a, b in talk.spans), decided.size, vad.frame_samples)
    assert decided[truth].mean() > 0.7  # espeak has short internal pauses
    assert not decided[~near].any()  # silence further than 0.3 s from speech is never speech (webrtcvad lingers)


def test_webrtc_frame_sizes_and_errors() -> None:
    assert [WebRtcVad(frame_ms=ms).frame_samples for ms in (10, 20, 30)] == [160, 320, 480]
    with pytest.raises(ValueError, match="10, 20 or 30"):
        WebRtcVad(frame_ms=25)
    with pytest.raises(ValueError, match="0-3"):
        WebRtcVad(aggressiveness=4)
    with pytest.raises(ValueError, match="480 samples"):
        WebRtcVad().is_speech(np.zeros(100, dtype=np.int16))


def test_streamed_silero_matches_faster_whispers_whole_file_run() -> None:
    from faster_whisper.vad import get_vad_model

    talk = make_dialogue(["Good morning, everyone."])
    pcm = to_int16(talk.audio)
    n = pcm.size // 512 * 512
    vad = SileroVad()
    streamed = np.array([vad.probability(pcm[i : i + 512]) for i in range(0, n, 512)])
    whole = np.asarray(get_vad_model()((pcm[:n] / 32768.0).astype(np.float32))).reshape(-1)
    assert np.allclose(streamed, whole, atol=1e-5)
    vad.reset()
    assert vad.probability(pcm[:512]) == pytest.approx(streamed[0], abs=1e-6)
    with pytest.raises(ValueError, match="512"):
        vad.probability(pcm[:480])
