"""End of turn: the segmenter's TurnPause/end_turn, the sentence rule, and SegmentStage's decision."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stream.config import VADConfig
from stream.records import Transcript, Utterance
from stream.stages.end_of_turn import EndCandidate, end_candidate, ends_sentence, trails_off
from stream.stages.segment import SegmentStage, segmenter_params
from stream.stages.segmenter import Segmenter, SegmenterParams, SpeechStart, TurnPause, UtteranceEnd
from stream.stages.transcriber import TranscribeStage
from stream.stages.vad import make_vad
from tests.helpers import audio_chunks, make_dialogue

F = 160


def _seg() -> Segmenter:
    return Segmenter(
        SegmenterParams(
            frame_samples=F,
            pre_roll_ms=30,
            post_roll_ms=20,
            min_speech_ms=50,
            max_utterance_ms=5000,
            end_silence_ms=100,
            turn_pause_ms=40,
        )
    )


def _feed(seg: Segmenter, pattern: str, offset: int = 0, *, end_turn_at_pause: bool) -> list[object]:
    out: list[object] = []
    for i, c in enumerate(pattern, start=offset):
        step = seg.push(i * F, np.full(F, i, dtype=np.int16), c == "1")
        out += step
        if end_turn_at_pause and any(isinstance(o, TurnPause) for o in step):
            out += seg.end_turn()
    return out


def test_a_short_pause_is_reported_once_and_can_end_the_turn() -> None:
    seg = _seg()
    out = _feed(seg, "0" * 5 + "1" * 10 + "0" * 5 + "1" * 10 + "0" * 15, end_turn_at_pause=True)
    pauses = [o for o in out if isinstance(o, TurnPause)]
    ends = [o for o in out if isinstance(o, UtteranceEnd)]
    assert [p.speech_end_sample for p in pauses] == [15 * F, 30 * F]
    assert [(e.start_sample, e.speech_end_sample, e.end_sample) for e in ends] == [
        (2 * F, 15 * F, 16 * F),  # ended at the pause, one frame into it
        (17 * F, 30 * F, 31 * F),  # the rest of the pause became pre-roll (no sample in both)
    ]
    assert sum(isinstance(o, SpeechStart) for o in out) == 2


def test_without_a_decision_the_pause_does_not_split() -> None:
    seg = _seg()
    out = _feed(seg, "1" * 10 + "0" * 5 + "1" * 10 + "0" * 15, end_turn_at_pause=False)
    assert len([o for o in out if isinstance(o, UtteranceEnd)]) == 1
    assert len([o for o in out if isinstance(o, TurnPause)]) == 2  # reported, not acted on


def test_a_quiet_gap_the_vad_calls_speech_is_a_pause() -> None:
    """The VAD's hangover: frames it still calls speech, but 40 dB under the voice, are a pause."""
    seg = _seg()
    loud, quiet = np.full(F, 8000, dtype=np.int16), np.full(F, 50, dtype=np.int16)
    out: list[object] = []
    for i in range(30):
        frame = quiet if 12 <= i < 18 else loud
        step = seg.push(i * F, frame, True)  # the VAD says speech throughout
        out += step
        if any(isinstance(o, TurnPause) for o in step):
            out += seg.end_turn()
    out += seg.flush()
    assert [p.speech_end_sample for p in out if isinstance(p, TurnPause)] == [12 * F]
    ends = [o for o in out if isinstance(o, UtteranceEnd)]
    assert [(e.start_sample, e.end_sample) for e in ends] == [(0, 13 * F), (13 * F, 30 * F)]


def test_end_turn_without_an_open_utterance_does_nothing() -> None:
    assert _seg().end_turn() == []
    assert _seg().current_pcm().size == 0


@pytest.mark.parametrize(
    ("text", "final"),
    [
        ("How are you?", True),
        ("I said no.", True),
        ('He said "stop!"', True),
        ("Well, I think", False),
        ("And then...", False),
        ("Hello there,", False),
        ("", False),
    ],
)
def test_sentence_ends(text: str, final: bool) -> None:
    assert ends_sentence(Transcript(text, "en", -0.2, 0.01)) is final


def test_a_dropped_transcript_never_ends_a_turn() -> None:
    assert not ends_sentence(Transcript("", "en", -2, 0.9, dropped="no_speech", raw_text="Thank you."))


def _reading(text: str) -> Transcript:
    return Transcript(text, "en", -0.2, 0.01)


def _candidate(text: str) -> EndCandidate:
    candidate = end_candidate(_reading(text))
    assert candidate is not None, f"{text!r} is no candidate end of turn"
    return candidate


@pytest.mark.parametrize(
    ("text", "plain", "trailing"),
    [
        ("Dogs are sitting by the door.", EndCandidate(6, trailing=False), EndCandidate(6, trailing=False)),
        ("Dogs are sitting by the...", None, EndCandidate(5, trailing=True)),
        ("Kids are talking by the-", None, EndCandidate(5, trailing=True)),
        ("I was-", None, None),  # two words: a hesitation, not a line left unfinished
        ("Hello there,", None, None),
    ],
)
def test_a_reading_is_a_candidate_end_of_its_kind(text: str, plain: object, trailing: object) -> None:
    assert end_candidate(_reading(text), trailing=False) == plain
    assert end_candidate(_reading(text)) == trailing


async def _run(stage: SegmentStage, audio: np.ndarray) -> list[Utterance]:
    return [u async for u in stage.run(audio_chunks(audio)) if isinstance(u, Utterance)]


def _stage(check: object) -> SegmentStage:
    cfg = VADConfig(end_of_turn_pause_ms=180, end_of_turn_confirm=False)
    vad = make_vad(cfg)
    return SegmentStage("s", vad, segmenter_params(cfg, vad.frame_samples), speed=None, turn_check=check)  # type: ignore[arg-type]


async def test_a_finished_sentence_ends_the_utterance_at_a_short_pause_and_its_transcript_is_kept() -> None:
    talk = make_dialogue([("Is it raining today?", 0.3), "Yes it is."], gap_s=0.3)
    seen: list[float] = []

    async def check(audio: np.ndarray) -> Transcript | None:
        seen.append(audio.size / 16000)
        return Transcript("Is it raining today?", "en", -0.1, 0.01)

    utts = await _run(_stage(check), talk.audio)
    assert len(utts) == 2 and seen
    assert utts[0].transcript is not None and utts[0].transcript.text == "Is it raining today?"
    (s0, e0), (s1, _) = talk.spans_s()
    assert utts[0].speech_end_s == pytest.approx(e0, abs=0.1) and utts[0].end_s <= s1


async def test_an_unfinished_sentence_keeps_the_utterance_open() -> None:
    talk = make_dialogue([("Is it raining today?", 0.3), "Yes it is."], gap_s=0.3)

    async def check(audio: np.ndarray) -> Transcript | None:
        return None

    utts = await _run(_stage(check), talk.audio)
    assert len(utts) == 1 and utts[0].transcript is None


def test_a_turn_can_end_at_an_earlier_pause_and_the_speech_since_goes_on_as_the_next_utterance() -> None:
    seg = _seg()
    out: list[object] = []
    pauses: list[TurnPause] = []
    for i, c in enumerate("1" * 10 + "0" * 5 + "1" * 8 + "0" * 5 + "1" * 6 + "0" * 15):
        step = seg.push(i * F, np.full(F, i, dtype=np.int16), c == "1")
        out += step
        pauses += [o for o in step if isinstance(o, TurnPause)]
        if len(pauses) == 2 and any(isinstance(o, TurnPause) for o in step):
            out += seg.end_turn(pauses[0].speech_end_sample)  # decided at the second pause, cut at the first
    ends = [o for o in out if isinstance(o, UtteranceEnd)]
    assert [(e.start_sample, e.speech_end_sample, e.end_sample) for e in ends] == [
        (0, 10 * F, 11 * F),  # one frame into the first pause, as when cut at once
        (11 * F, 34 * F, 36 * F),  # the rest: begun at the cut, the second pause inside, ended by silence
    ]
    starts = [o.start_sample for o in out if isinstance(o, SpeechStart)]
    assert starts == [0, 11 * F]
    assert np.array_equal(ends[1].pcm[:F], np.full(F, 11, dtype=np.int16))  # no sample in both
    assert len(pauses) == 3  # the second pause was not reported again after the cut


@pytest.mark.parametrize(
    ("before", "later", "stands"),
    [
        ("I stalk guys.", "I stalk guys and keep their underpants.", False),  # ran on
        ("I stalk guys.", "I stalk guys. And keep their underpants.", True),
        ("Is it raining today?", "Is it raining, today? Yes it is.", True),  # a word more or less
        ("You know what, Greg?", "You know what Greg, we are good.", False),
        ("Since I moved.", "Since I moved", True),  # nothing heard past it: no evidence against
        ("Hi.", "Hi there. How are you?", True),  # within one word
        ("Okay.", "", True),
    ],
)
def test_a_later_reading_confirms_a_sentence_end_unless_the_words_run_on(before: str, later: str, stands: bool) -> None:
    assert _candidate(before).confirmed_by(_reading(later)) is stands


@pytest.mark.parametrize(
    ("before", "later", "plain", "voice_changed"),
    [
        ("Okay.", "Okay, maybe people give out fake numbers.", False, True),  # a quick reply joined by a comma
        ("I stalk guys.", "I stalk guys and keep their underpants.", False, False),  # no comma: ran on anyway
        ("Oh yeah.", "Oh yeah, hi, how are you.", False, True),
    ],
)
def test_with_another_voice_after_the_pause_a_comma_there_confirms_too(
    before: str, later: str, plain: bool, voice_changed: bool
) -> None:
    first, then = _candidate(before), _reading(later)
    assert first.confirmed_by(then) is plain
    assert first.confirmed_by(then, voice_changed=True) is voice_changed


def _scripted(first: str, later: str) -> tuple[object, list[float]]:
    """A check reading ``first`` at the first pause and ``later`` at the second, as Whisper reads the first
    sentence alone and then both; any further reading (after a cut) is what ``later`` adds to ``first``."""
    seen: list[float] = []

    async def check(audio: np.ndarray) -> Transcript | None:
        seen.append(audio.size / 16000)
        text = [first, later][len(seen) - 1] if len(seen) <= 2 else later.removeprefix(first).strip()
        return Transcript(text, "en", -0.1, 0.01)

    return check, seen


def _confirming_stage(check: object, *, confirm_ms: int = 600) -> SegmentStage:
    cfg = VADConfig(end_of_turn_pause_ms=180, end_of_turn_confirm_ms=confirm_ms)
    vad = make_vad(cfg)
    params = segmenter_params(cfg, vad.frame_samples)
    assert params.turn_confirm  # the default
    return SegmentStage("s", vad, params, speed=None, turn_check=check)  # type: ignore[arg-type]


async def test_a_confirmed_sentence_end_cuts_at_its_own_pause() -> None:
    talk = make_dialogue([("Is it raining today?", 0.3), "Yes it is, all day long."], gap_s=0.3)
    (s0, e0), (s1, e1) = talk.spans_s()
    check, seen = _scripted("Is it raining today?", "Is it raining today? Yes it is, all day long.")
    stage = _confirming_stage(check)
    utts = await _run(stage, talk.audio)
    assert len(utts) == 2, [(u.start_s, u.end_s) for u in utts]
    assert utts[0].transcript is not None and utts[0].transcript.text == "Is it raining today?"
    assert utts[0].speech_end_s == pytest.approx(e0, abs=0.1) and utts[0].end_s <= s1
    assert utts[1].start_s == utts[0].end_s and utts[1].speech_end_s == pytest.approx(e1, abs=0.1)
    assert utts[1].transcript is not None and utts[1].transcript.text == "Yes it is, all day long."
    assert stage.turn_ends == 1 and stage.turn_unconfirmed == 0
    assert len(seen) == 3  # the first pause, the second (confirming), the second again on the new utterance


async def test_without_confirmation_a_sentence_end_cuts_at_once() -> None:
    talk = make_dialogue([("Is it raining today?", 0.3), "Yes it is, all day long."], gap_s=0.3)
    check, _ = _scripted("Is it raining today.", "Is it raining today and yes it is all day long.")
    utts = await _run(_stage(check), talk.audio)
    assert len(utts) == 2 and utts[0].transcript is not None and utts[0].transcript.text == "Is it raining today."


async def test_a_sentence_end_the_next_reading_runs_on_past_does_not_cut() -> None:
    talk = make_dialogue([("Is it raining today?", 0.3), "Yes it is, all day long."], gap_s=0.3)
    check, _ = _scripted("Is it raining today.", "Is it raining today and yes it is all day long.")
    stage = _confirming_stage(check)
    utts = await _run(stage, talk.audio)
    assert len(utts) == 1
    # Silence then ended it right after the last reading, which is reused: no second pass.
    assert utts[0].transcript is not None and utts[0].transcript.text.endswith("all day long.")
    assert stage.turn_ends == 0 and stage.turn_unconfirmed == 1


def _recorded(first: str, later: str) -> tuple[object, list[np.ndarray]]:
    """:func:`_scripted`'s check, keeping the audio of every reading it was asked for."""
    scripted, _ = _scripted(first, later)
    heard: list[np.ndarray] = []

    async def check(audio: np.ndarray) -> Transcript | None:
        heard.append(audio)
        return await scripted(audio)  # type: ignore[operator, no-any-return]

    return check, heard


def _rereadings(heard: list[np.ndarray]) -> list[np.ndarray]:
    """The readings after the first that heard its audio and more: the confirming readings of it."""
    first = heard[0]
    return [r for r in heard[1:] if r.size > first.size and np.array_equal(r[: first.size], first)]


def _voice_stage(check: object, voice: object, **settings: object) -> SegmentStage:
    """A confirming stage that also asks ``voice`` (threshold 0.45 unless ``settings`` say otherwise)."""
    cfg = VADConfig(**{"end_of_turn_pause_ms": 180, "end_of_turn_voice_similarity": 0.45, **settings})  # type: ignore[arg-type]
    vad = make_vad(cfg)
    params = segmenter_params(cfg, vad.frame_samples)
    return SegmentStage("s", vad, params, speed=None, turn_check=check, voice=voice)  # type: ignore[arg-type]


@pytest.mark.parametrize(("similarity", "cut"), [(0.2, True), (0.44, True), (0.45, False), (0.8, False), (None, False)])
async def test_another_voice_after_the_pause_confirms_a_sentence_end_before_any_reading(
    similarity: float | None, cut: bool
) -> None:
    """Whisper would read two people's lines as one sentence; the speaker encoder, asked first, decides."""
    talk = make_dialogue([("Is it raining today?", 0.3), "Yes it is, all day long."], gap_s=0.3)
    (_, e0), (s1, _) = talk.spans_s()
    check, heard = _recorded("Is it raining today.", "Is it raining today and yes it is all day long.")
    embedded: list[float] = []

    def voice(audio: np.ndarray) -> np.ndarray | None:
        """The words before the pause embed as [1, 0]; what follows as ``similarity`` to that."""
        embedded.append(audio.size / 16000)
        if similarity is None:
            return None
        return np.array([1.0, 0.0]) if len(embedded) % 2 else np.array([similarity, np.sqrt(1 - similarity**2)])

    stage = _voice_stage(check, voice)
    utts = await _run(stage, talk.audio)
    # The words before the pause (from the utterance's start, pre-roll included) when the candidate was made,
    # then all heard after it at its decision (not when the first embedding failed).
    assert e0 - 0.5 <= embedded[0] <= e0 + 0.3
    if similarity is not None:
        assert 0.5 <= embedded[1] <= 1.0
    assert len(utts) == (2 if cut else 1)
    assert (stage.turn_ends, stage.turn_voice_ends, stage.turn_unconfirmed) == ((1, 1, 0) if cut else (0, 0, 1))
    if cut:
        assert utts[0].speech_end_s == pytest.approx(e0, abs=0.1) and utts[0].end_s <= s1
        assert utts[0].transcript is not None and utts[0].transcript.text == "Is it raining today."
        assert _rereadings(heard) == []  # the voice settled it: no confirming reading was made
    else:
        assert _rereadings(heard) != []


@pytest.mark.parametrize("another", [True, False])
async def test_another_voice_makes_a_turn_of_a_pause_whose_reading_ended_no_sentence(another: bool) -> None:
    """Whisper read no sentence end at the pause ("Is it raining today", the next speaker not yet heard); the
    voice after it decides alone, and no reading is made to wait for."""
    talk = make_dialogue([("Is it raining today?", 0.3), "Yes it is, all day long."], gap_s=0.3)
    (_, e0), (s1, _) = talk.spans_s()
    check, heard = _recorded("Is it raining today", "Is it raining today yes it is all day long")

    def voice(audio: np.ndarray) -> np.ndarray:
        """The first second of the recording is one voice; after it, ``another`` voice or the same."""
        return np.array([1.0, 0.0]) if audio.size >= 16000 or not another else np.array([0.0, 1.0])

    stage = _voice_stage(check, voice)
    utts = await _run(stage, talk.audio)
    assert stage.turn_unconfirmed == 0  # no sentence end was pending
    first, confirming = heard[0], _rereadings(heard)
    if another:
        assert len(utts) == 2 and stage.turn_voice_ends == 1
        assert utts[0].speech_end_s == pytest.approx(e0, abs=0.1) and utts[0].end_s <= s1
        assert utts[0].transcript is not None and utts[0].transcript.text == "Is it raining today"
        assert confirming == []
    else:
        assert len(utts) == 1 and stage.turn_voice_ends == 0
        # Only the pauses were read: none was made at the look-ahead, 0.6 s past the pause.
        assert all(abs(r.size - first.size - 9600) > 800 for r in confirming)
        # The quick reading at the pause is not the utterance's transcript: it is transcribed in full.
        assert utts[0].transcript is None or utts[0].transcript.text != "Is it raining today"


async def test_the_voice_is_not_asked_without_enough_speech_after_the_pause_or_with_the_check_off() -> None:
    asked: list[int] = []

    def voice(audio: np.ndarray) -> np.ndarray:
        """Every second of speech or more is one voice, anything shorter another: any check after a pause
        with less than a second after it would cut."""
        asked.append(audio.size)
        return np.array([1.0, 0.0]) if audio.size >= 16000 else np.array([0.0, 1.0])

    # The confirming reading is due 0.3 s past the candidate: too little speech to tell a voice by, so only
    # the words before the pause were embedded (when the candidate was made) and the reading decides.
    talk = make_dialogue([("Is it raining today?", 0.3), "Yes it is, all day long."], gap_s=0.3)
    check, _ = _scripted("Is it raining today?", "Is it raining today? Yes it is, all day long.")
    stage = _voice_stage(check, voice, end_of_turn_confirm_ms=300)
    assert len(await _run(stage, talk.audio)) == 2
    assert stage.turn_ends >= 1 and stage.turn_voice_ends == 0
    asked.clear()
    # With the check off it is never asked.
    talk = make_dialogue([("Is it raining today?", 0.3), "Yes it is, all day long."], gap_s=0.3)
    check, _ = _scripted("Is it raining today.", "Is it raining today and yes it is all day long.")
    stage = _voice_stage(check, voice, end_of_turn_voice_similarity=0.0)
    assert len(await _run(stage, talk.audio)) == 1 and stage.turn_voice_ends == 0 and asked == []


async def test_a_reading_whisper_doubted_decides_the_cut_but_is_not_reused_as_the_transcript() -> None:
    talk = make_dialogue([("Is it raining today?", 0.3), "Yes it is, all day long."], gap_s=0.3)
    check, _ = _scripted("Is it raining today?", "Is it raining today? Yes it is, all day long.")

    async def doubted(audio: np.ndarray) -> Transcript | None:
        reading = await check(audio)  # type: ignore[operator]
        return dataclasses.replace(reading, avg_logprob=-1.5, doubted=True)

    stage = _confirming_stage(doubted)
    utts = await _run(stage, talk.audio)
    assert len(utts) == 2 and stage.turn_ends == 1
    assert [u.transcript for u in utts] == [None, None]  # the transcription stage transcribes them in full


async def test_the_end_of_turn_check_asks_whisper_for_a_quick_reading() -> None:
    asked: list[bool] = []

    class Whisper:
        model_id = "fake"
        paths: dict[str, int] = {}

        def transcribe(self, audio: np.ndarray, *, redo: bool = True) -> Transcript:
            asked.append(redo)
            return _reading("Hi.")

    assert await TranscribeStage(Whisper()).end_of_turn(np.zeros(1600, np.float32)) == _reading("Hi.")
    assert asked == [False]


@pytest.mark.parametrize("confirm_ms", [1000, 500])
async def test_a_sentence_end_is_confirmed_soon_even_when_the_speaker_goes_on_without_a_pause(confirm_ms: int) -> None:
    long_line = "Yes it is, and it has been raining all day long since early this morning without a break."
    talk = make_dialogue([("Is it raining today?", 0.3), long_line], gap_s=0.3)
    (_, e0), (s1, e1) = talk.spans_s()
    check, seen = _scripted("Is it raining today?", "Is it raining today? Yes it is.")
    utts = await _run(_confirming_stage(check, confirm_ms=confirm_ms), talk.audio)
    assert len(utts) == 2 and utts[0].transcript is not None
    # The confirming reading came end_of_turn_confirm_ms past what the first reading heard, not at the end of
    # the long line.
    assert seen[0] + confirm_ms / 1000 - 0.05 < seen[1] < seen[0] + confirm_ms / 1000 + 0.15 < e1 - 1.0


@pytest.mark.parametrize(
    ("text", "trails"),
    [
        ("Dogs are sitting by the...", True),
        ("Kids are talking by the-", True),
        ("The dogs are s-", False),  # a word heard only in part: the pause fell inside it
        ("Um…", False),  # too short: a hesitation
        ("I mean...", False),
        ("Well I mean…", True),
        ("Dogs are sitting by the door.", False),  # a sentence end, not a trailing one
        ("a well-known", False),
        ("", False),
    ],
)
def test_a_reading_that_trails_off(text: str, trails: bool) -> None:
    assert trails_off(Transcript(text, "en", -0.2, 0.01)) is trails
    assert not trails_off(Transcript("", "en", -2, 0.9, dropped="no_speech", raw_text="Um..."))


@pytest.mark.parametrize(
    ("before", "later", "stands"),
    [
        ("Kids are talking by the-", "Kids are talking by the- She has just hit the high.", True),  # a word cut off
        ("We were going-", "We were going to say we should go.", False),
        ("Dogs are sitting by the...", "Dogs are sitting by the... Kids are talking.", True),
        # After a reading that trails off only a new sentence there counts, not the line's own last word(s).
        ("Dogs are sitting by the...", "Dogs are sitting by the... door.", False),
        ("Dogs are sitting by the...", "Dogs are sitting by the door. Kids are talking.", False),
        ("Dogs are sitting by the...", "Dogs are sitting by the", True),  # nothing heard past it: no evidence against
    ],
)
def test_a_cut_off_word_in_the_later_reading_ends_a_sentence_there(before: str, later: str, stands: bool) -> None:
    assert _candidate(before).confirmed_by(_reading(later)) is stands


@pytest.mark.parametrize(
    ("first", "cut"),
    [
        ("Is it raining today...", True),  # a line read as trailing off: confirmed like a sentence end
        ("Is it...", False),  # a hesitation of two words: no candidate
    ],
)
async def test_a_reading_that_trails_off_at_a_pause_is_a_candidate_end_of_turn(first: str, cut: bool) -> None:
    talk = make_dialogue([("Is it raining today?", 0.3), "Yes it is, all day long."], gap_s=0.3)
    (_, e0), (s1, _) = talk.spans_s()
    check, _ = _scripted(first, first + " Yes it is, all day long.")
    stage = _confirming_stage(check)
    utts = await _run(stage, talk.audio)
    assert len(utts) == (2 if cut else 1), [(u.start_s, u.end_s) for u in utts]
    if cut:
        assert utts[0].speech_end_s == pytest.approx(e0, abs=0.1) and utts[0].end_s <= s1
    assert stage.turn_ends == int(cut)
