"""bench.change_points: segmentation alone, scored like `emostream evaluate`, with and without cuts."""

from __future__ import annotations

from pathlib import Path

from bench.change_points import score_pair
from tests.helpers import write_wav
from tests.stream.test_change_points import A_TEXT, B_TEXT, _scene


def test_a_two_voice_turn_without_a_pause_is_found_only_with_the_cut(tmp_path: Path) -> None:
    audio, join = _scene("en-us+f4", 70, gap_s=0.06)
    wav = write_wav(tmp_path / "two.wav", audio)
    truth = tmp_path / "two.csv"
    truth.write_text(f'start_s,end_s,text,emotion\n0.1,{join / 16000:.3f},"{A_TEXT}",neutral\n'
                     f'{join / 16000:.3f},{audio.size / 16000 - 1.0:.3f},"{B_TEXT}",neutral\n')  # fmt: skip
    off, on = score_pair(wav, truth, [0.0, 2.0])
    assert (off["utterances"], off["recall"]) == (1, 0.5)
    assert (on["utterances"], on["recall"], on["precision"]) == (2, 1.0, 1.0)
