"""The segment stage: one stream's audio chunks in; speech starts, finished utterances and source problems out.

The VAD (a :class:`~stream.stages.vad.FrameClassifier`) and the sans-I/O
:class:`~stream.stages.segmenter.Segmenter` run per chunk in a worker thread; every boundary is an
exact sample index on the source's own timeline. With ``vad.speaker_change_score`` set, a finished
segment (and its preview, alike) is cut at the changes of speaker :mod:`stream.stages.change_points`
finds in it: each piece is an utterance of its own, with its own ``speech`` start.

End of turn (``vad.end_of_turn_pause_ms``): at each short pause inside an utterance Whisper reads the
words so far (:data:`TurnCheck`). A finished sentence ends the utterance there at once, or -- with
``vad.end_of_turn_confirm`` -- only once the next pause's reading confirms it: Whisper punctuates any
audio it is given as if it were complete ("I stalk guys." at a breath before "and keep their
underpants."), but with the words that follow in view it does not. So the candidate stands unless the
later reading carries on past it with no sentence end there (:mod:`stream.stages.end_of_turn`); the cut
then falls at the earlier pause, and the speech since is the next utterance. The later reading comes at
the next pause, or once ``vad.end_of_turn_confirm_ms`` of audio has followed the candidate, whichever is first
(a speaker who goes on without a pause would otherwise hold the first sentence back for as long).
With confirmation on, a reading that trails off at the pause (``by the...``, ``by the-``) is a candidate
too: Whisper often reads an acted line's end so when the next speaker's words are not yet in view. It
stands only when the later reading starts a new sentence where it stopped; a cut-off word (``by the- She
has``) ends a sentence there. The text rules are :mod:`stream.stages.end_of_turn`'s. The voice is a
second judge (``vad.end_of_turn_voice_similarity``, :data:`VoiceEmbedding`): when the speaker encoder hears
another voice after a pause than before it, the utterance ends at that pause -- at a candidate whatever the
later reading would say, and (with confirmation on) at a pause whose reading ended no sentence. Whisper
often reads two people's acted lines as one sentence, words a line differently the second time, or reads the
next speaker's first words into the line before, so the words alone miss such turns. The words before the
pause are embedded when it is read, the speech after it (:data:`VOICE_MIN_S` or more) when the confirming
reading is due; the voice is asked first, so a turn it settles costs no second reading and waits for none,
and a pause that ended no sentence needs no further reading unless another pause comes first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from stream.config import VADConfig
from stream.records import (
    SAMPLE_RATE_HZ,
    AudioChunk,
    SegmentItem,
    SourceItem,
    SourceProblem,
    SpeechBegan,
    Transcript,
    Utterance,
    UtterancePreview,
)
from stream.stages.change_points import ChangeParams, change_points, score_at
from stream.stages.end_of_turn import EndCandidate, end_candidate
from stream.stages.segmenter import (
    EndPreview,
    Framer,
    Segmenter,
    SegmenterOutput,
    SegmenterParams,
    SpeechStart,
    TurnPause,
    UtteranceEnd,
)
from stream.stages.vad import FrameClassifier

logger = logging.getLogger(__name__)

__all__ = ["SegmentStage", "TurnCheck", "VoiceEmbedding", "change_params", "segmenter_params"]

# The end-of-turn check: audio of the open utterance so far -> Whisper's transcript of it (None: it failed).
TurnCheck = Callable[[np.ndarray], Awaitable[Transcript | None]]
# A stretch of speech -> the speaker encoder's unit-norm embedding of it (None: it cannot tell).
VoiceEmbedding = Callable[[np.ndarray], np.ndarray | None]

# The voice check compares the last VOICE_BEFORE_S before a pause with everything heard after it, when each
# side has at least VOICE_MIN_S (a GE2E window is 1.6 s; much less says little).
VOICE_BEFORE_S = 3.0
VOICE_MIN_S = 0.5


@dataclass(frozen=True, slots=True)
class _Pending:
    """A candidate end of turn read at ``pause``, waiting for its confirming reading; or (``candidate`` None) a
    pause whose reading ended no sentence, waiting to hear whether another voice follows it."""

    pause: TurnPause
    candidate: EndCandidate | None
    reading: Transcript  # what Whisper read up to the pause (the cut utterance's transcript if it stands)
    spent_s: float  # how long that reading took
    until: int  # the sample the reading heard up to
    voice: np.ndarray | None = None  # the speaker embedding of the words before the pause (None: not asked)


def segmenter_params(vad_cfg: VADConfig, frame_samples: int) -> SegmenterParams:
    """``[vad]`` config -> :class:`SegmenterParams` for a classifier with ``frame_samples`` frames."""
    return SegmenterParams(
        frame_samples=frame_samples,
        sample_rate_hz=SAMPLE_RATE_HZ,
        pre_roll_ms=vad_cfg.pre_roll_ms,
        post_roll_ms=vad_cfg.post_roll_ms,
        min_speech_ms=vad_cfg.min_speech_ms,
        max_utterance_ms=round(vad_cfg.max_utterance_s * 1000),
        end_silence_ms=vad_cfg.end_silence_ms,
        turn_pause_ms=vad_cfg.end_of_turn_pause_ms,
        turn_confirm=vad_cfg.end_of_turn_confirm,
        turn_confirm_ms=vad_cfg.end_of_turn_confirm_ms,
        turn_voice_score=vad_cfg.end_of_turn_voice_score,
        turn_voice_similarity=vad_cfg.end_of_turn_voice_similarity,
        early_start_ms=vad_cfg.early_start_ms,
    )


def change_params(vad_cfg: VADConfig) -> ChangeParams | None:
    """``[vad]`` config -> the in-segment speaker change rule (None: off)."""
    if vad_cfg.speaker_change_score <= 0:
        return None
    return ChangeParams(vad_cfg.speaker_change_score, vad_cfg.speaker_change_min_gap_ms)


class SegmentStage:
    """Chunks of one stream in; speech starts, finished utterances and source problems out.

    The VAD and the sans-I/O segmenter run per chunk in a worker thread. Source problems pass
    through unchanged; a gap in the samples (microphone drops or reconnects) closes the open utterance.
    """

    def __init__(  # noqa: PLR0913 (the end-of-turn judges, Whisper and the voice, are models, not settings)
        self,
        stream_id: str,
        vad: FrameClassifier,
        params: SegmenterParams,
        *,
        speed: float | None = 1.0,
        executor: Executor | None = None,
        first_utterance: int = 0,
        turn_check: TurnCheck | None = None,
        change: ChangeParams | None = None,
        voice: VoiceEmbedding | None = None,
    ) -> None:
        """``turn_check``: reads the words at each ``params.turn_pause_ms`` pause; a sentence end ends the
        utterance there (with ``params.turn_confirm``, once the next pause's reading confirms it: see the
        module docstring). ``change``: cut segments at changes of speaker (None: only where the segmenter
        ends them). ``voice``: with ``params.turn_voice_similarity``, the utterance ends at a pause
        (a candidate, or one whose reading ended no sentence) without a confirming reading when the voices
        either side of it are less alike than that (cosine similarity of ``voice``'s embeddings; None: only
        the readings decide)."""
        self.stream_id = stream_id
        self._change = change
        self.change_cuts = 0
        self._vad = vad
        self._framer = Framer(vad.frame_samples)
        self._seg = Segmenter(params)
        self._speed = speed
        self._executor = executor
        # End of turn: at a short pause, the words so far are checked; a finished sentence ends the utterance.
        self._turn_check = turn_check if params.turn_pause_ms else None
        self._todo: deque[tuple[int, np.ndarray]] = deque()  # frames after a pause, fed once it is decided
        self._pause: TurnPause | None = None
        self._confirm = params.turn_confirm
        self._confirm_samples = params.turn_confirm_ms * SAMPLE_RATE_HZ // 1000
        self._voice_score = params.turn_voice_score
        self._voice = voice if params.turn_voice_similarity > 0 else None
        self._voice_under = params.turn_voice_similarity
        self.turn_voice_ends = 0  # turns ended on the voice alone
        self._pending: _Pending | None = None  # a sentence end (or a pause) awaiting its reading (or the voice)
        self.turn_unconfirmed = 0  # sentence ends the next reading ran on past
        self._lookahead = False  # the pending pause is due its decision now, without a new pause
        self.turn_checks = 0
        self.turn_ends = 0
        self._count = first_utterance  # utterances numbered before (a resumed replay continues the ids)
        self._current = ""
        self._last: AudioChunk | None = None
        self.audio_s = 0.0

    def _wall_time(self, sample: int) -> float:
        """When ``sample`` was heard: the latest chunk's arrival minus the audio still after it."""
        chunk = self._last
        if chunk is None:
            return 0.0
        if self._speed is None:
            return chunk.arrival
        return chunk.arrival - max(0, chunk.end_sample - sample) / (SAMPLE_RATE_HZ * self._speed)

    def _convert(
        self, outputs: Sequence[SegmenterOutput], early: tuple[Transcript, float] | None = None
    ) -> list[SegmentItem]:
        """Segmenter outputs -> segment items; ``early``: a reading of the utterance that ends here (its
        transcript and how long Whisper took), reused as its transcript."""
        items: list[SegmentItem] = []
        for out in outputs:
            if isinstance(out, TurnPause):
                continue
            if isinstance(out, SpeechStart):
                self._count += 1
                self._current = f"{self.stream_id}-{self._count}"
                items.append(SpeechBegan(self.stream_id, self._current, out.start_sample / SAMPLE_RATE_HZ))
            elif isinstance(out, EndPreview):
                # The same cuts and ids as the utterance will get if it ends with this audio.
                pieces = self._pieces(out.utterance)
                ids = [self._current] + [f"{self.stream_id}-{self._count + k}" for k in range(1, len(pieces))]
                known = early if len(pieces) == 1 else None  # read already: no early pass needed
                items += [UtterancePreview(self._utterance(p, known, uid)) for p, uid in zip(pieces, ids, strict=True)]
            else:
                pieces = self._pieces(out)
                self.change_cuts += len(pieces) - 1
                for k, piece in enumerate(pieces):
                    if k:  # a new speaker's piece: its own utterance, begun where the cut is
                        self._count += 1
                        self._current = f"{self.stream_id}-{self._count}"
                        items.append(SpeechBegan(self.stream_id, self._current, piece.start_sample / SAMPLE_RATE_HZ))
                    # The end-of-turn transcript read the whole segment: a cut one gets Whisper anew.
                    items.append(self._utterance(piece, early if len(pieces) == 1 else None, self._current))
        return items

    def _pieces(self, out: UtteranceEnd) -> list[UtteranceEnd]:
        """``out`` cut at its changes of speaker (itself when there are none or the rule is off)."""
        if self._change is None:
            return [out]
        cuts = change_points(out.pcm.astype(np.float32) / 32768.0, self._change)
        if not cuts:
            return [out]
        bounds = [0, *cuts, out.pcm.size]
        pieces = []
        for a, b in zip(bounds, bounds[1:], strict=False):
            last = b == out.pcm.size
            pieces.append(
                UtteranceEnd(
                    start_sample=out.start_sample + a,
                    end_sample=out.start_sample + b,
                    # A piece before a cut ends in the middle of the pause between the two voices.
                    speech_end_sample=out.speech_end_sample if last else out.start_sample + b,
                    pcm=out.pcm[a:b],
                    forced=out.forced and last,
                )
            )
        return pieces

    def _utterance(self, out: UtteranceEnd, early: tuple[Transcript, float] | None, utterance_id: str) -> Utterance:
        if early is not None and early[0].doubted:
            early = None  # a reading Whisper doubted decides cuts, but the utterance is transcribed in full
        return Utterance(
            stream=self.stream_id,
            utterance_id=utterance_id,
            start_s=out.start_sample / SAMPLE_RATE_HZ,
            end_s=out.end_sample / SAMPLE_RATE_HZ,
            speech_end_s=out.speech_end_sample / SAMPLE_RATE_HZ,
            audio=(out.pcm.astype(np.float32) / 32768.0),
            speech_end_at=self._wall_time(out.speech_end_sample),
            forced=out.forced,
            transcript=early[0] if early is not None else None,
            transcript_s=early[1] if early is not None else 0.0,
        )

    def _process(self, chunk: AudioChunk) -> list[SegmentItem]:
        gap, frames = self._framer.push(chunk.pcm, chunk.start_sample)
        items: list[SegmentItem] = []
        if gap:  # close what was open before the lost audio, timed against the chunks before it
            self._todo.clear()
            self._pause, self._pending, self._lookahead = None, None, False
            items += self._convert(self._seg.flush())
            self._vad.reset()
        self._last = chunk
        self._todo.extend(frames)
        return items + self._feed()

    def _feed(self) -> list[SegmentItem]:
        """Feed pending frames until they run out or a pause needs the end-of-turn check."""
        items: list[SegmentItem] = []
        while self._todo and self._pause is None:
            start, frame = self._todo.popleft()
            step = self._seg.push(start, frame, self._vad.is_speech(frame))
            items += self._convert(step, self._pending_reading(step))
            if any(isinstance(o, UtteranceEnd) for o in step):
                self._pending = None  # ended anyway (silence, max_utterance): nothing left to cut
            if self._turn_check is not None:
                self._pause = next((o for o in step if isinstance(o, TurnPause)), None)
            due = self._pending.until + self._confirm_samples if self._pending else None
            if self._pause is None and due is not None and start + frame.size >= due:
                self._lookahead = True
                break
        return items

    def _voice_at(self, sample: int) -> float | None:
        """How much the voice changes across the pause at ``sample`` in the open utterance (see
        :mod:`stream.stages.change_points`); None when that cannot be told."""
        start = self._seg.current_start
        pcm = self._seg.current_pcm().astype(np.float32) / 32768.0
        return score_at(pcm, sample - start)

    def _voice_before(self, sample: int) -> np.ndarray | None:
        """The speaker embedding of the last :data:`VOICE_BEFORE_S` of the open utterance before ``sample``
        (None: the voice check is off, or there is under :data:`VOICE_MIN_S` of it)."""
        if self._voice is None:
            return None
        cut = sample - self._seg.current_start
        before = self._seg.current_pcm()[max(0, cut - round(VOICE_BEFORE_S * SAMPLE_RATE_HZ)) : cut]
        return self._voice(before.astype(np.float32) / 32768.0) if before.size >= VOICE_MIN_S * SAMPLE_RATE_HZ else None

    def _another_voice(self, pending: _Pending) -> bool:
        """Whether the speech since ``pending``'s pause (:data:`VOICE_MIN_S` or more) sounds like another speaker
        than the words before it: the cosine similarity of their embeddings under the threshold."""
        if self._voice is None or pending.voice is None:
            return False
        after = self._seg.current_pcm()[pending.pause.speech_end_sample - self._seg.current_start :]
        if after.size < VOICE_MIN_S * SAMPLE_RATE_HZ:
            return False
        embedding = self._voice(after.astype(np.float32) / 32768.0)
        if embedding is None:
            return False
        similarity = float(np.dot(pending.voice, embedding))
        if similarity >= self._voice_under:
            return False
        self.turn_voice_ends += 1
        logger.debug("%s: another voice after the pause (similarity %.2f)", self.stream_id, similarity)
        return True

    def _pending_reading(self, step: Sequence[SegmenterOutput]) -> tuple[Transcript, float] | None:
        """The pending sentence end's reading (transcript, Whisper's time) when ``step`` ends (or previews the
        end of) the utterance with no speech after what that reading heard: silence confirmed it, and no
        second pass is needed. (A pause that ended no sentence and waits only for the voice is transcribed as
        before: its quick reading is not reused.)"""
        if self._pending is None or self._pending.candidate is None:
            return None
        ends = [
            o.utterance if isinstance(o, EndPreview) else o for o in step if not isinstance(o, SpeechStart | TurnPause)
        ]
        if not ends or any(u.forced or u.speech_end_sample > self._pending.until for u in ends):
            return None
        return self._pending.reading, self._pending.spent_s

    def _voice_turn(self) -> list[SegmentItem] | None:
        """Before the confirming reading: when another voice follows the pending pause, the turn ends there and
        no reading is needed (the outputs); None: the readings decide."""
        pending = self._pending
        if pending is None or not self._another_voice(pending):
            return None
        pause, self._pause = self._pause, None
        self._pending, self._lookahead = None, False
        return self._end_pending(pending, pause)

    def _drop_pending(self) -> list[SegmentItem]:
        """Forget the pending pause (nothing confirmed it) and go on feeding."""
        self._pending, self._lookahead = None, False
        return self._feed()

    def _end_pending(self, pending: _Pending, pause: TurnPause | None) -> list[SegmentItem]:
        """End the utterance at ``pending``'s pause, its reading the transcript; ``pause``: the pause now being
        decided, if any, which is read again on the new utterance alone."""
        self.turn_ends += 1
        items = self._convert(self._seg.end_turn(pending.pause.speech_end_sample), (pending.reading, pending.spent_s))
        self._pause = pause if self._seg.in_utterance else None
        return items if self._pause is not None else items + self._feed()

    def _decide_turn(self, heard: Transcript | None, spent_s: float, until: int) -> list[SegmentItem]:
        """After a pause was read (``heard``; None: the check failed): end the utterance where a sentence
        ends, now or -- confirming -- at the pause before, then go on feeding."""
        pause, self._pause = self._pause, None  # None: a reading due without a pause (no new candidate)
        pending, self._pending = self._pending, None
        self._lookahead = False
        if pending is not None and pending.candidate is not None and heard is not None:
            if pending.candidate.confirmed_by(heard) or (
                self._voice_score > 0
                and pending.candidate.confirmed_by(heard, voice_changed=True)
                and (self._voice_at(pending.pause.speech_end_sample) or 0.0) >= self._voice_score
            ):
                return self._end_pending(pending, pause)
            self.turn_unconfirmed += 1
            logger.debug(
                "%s: the sentence end of %r was not confirmed by %r", self.stream_id, pending.reading.text, heard.text
            )
        logger.debug("%s: read %r at a pause (%s)", self.stream_id, heard and heard.text, pending and "pending")
        candidate = None if pause is None or heard is None else end_candidate(heard, trailing=self._confirm)
        if pause is not None and heard is not None and candidate is None and self._confirm:
            # No sentence end here, but another voice after the pause would still make it a turn.
            voice = self._voice_before(pause.speech_end_sample)
            self._pending = None if voice is None else _Pending(pause, None, heard, spent_s, until, voice)
            return self._feed()
        if candidate is None or pause is None or heard is None:
            return self._feed()
        if self._confirm:
            self._pending = _Pending(
                pause, candidate, heard, spent_s, until, self._voice_before(pause.speech_end_sample)
            )
            return self._feed()
        self.turn_ends += 1
        return self._convert(self._seg.end_turn(), (heard, spent_s)) + self._feed()

    def _flush(self) -> list[SegmentItem]:
        return self._convert(self._seg.flush())

    async def run(self, inp: AsyncIterator[SourceItem]) -> AsyncIterator[SegmentItem]:
        loop = asyncio.get_running_loop()
        async for item in inp:
            if isinstance(item, SourceProblem):
                yield item
                continue
            self.audio_s += item.pcm.size / SAMPLE_RATE_HZ
            for out in await loop.run_in_executor(self._executor, self._process, item):
                yield out
            while (self._pause is not None or self._lookahead) and self._turn_check is not None:
                # Later frames wait for the decision (a live source buffers them meanwhile), so where an
                # utterance ends never depends on how fast the check was.
                by_voice = await loop.run_in_executor(self._executor, self._voice_turn)
                if by_voice is not None:  # another voice: a turn whatever a reading would say, so none is made
                    for out in by_voice:
                        yield out
                    continue
                if self._pause is None and self._pending is not None and self._pending.candidate is None:
                    # The same voice went on past a pause that ended no sentence: nothing for a reading to decide.
                    for out in await loop.run_in_executor(self._executor, self._drop_pending):
                        yield out
                    continue
                pcm = self._seg.current_pcm()
                until = self._seg.current_start + pcm.size
                t0 = time.perf_counter()
                heard = await self._turn_check(pcm.astype(np.float32) / 32768.0)
                spent = time.perf_counter() - t0
                self.turn_checks += 1
                for out in await loop.run_in_executor(self._executor, self._decide_turn, heard, spent, until):
                    yield out
        for out in self._flush():
            yield out
