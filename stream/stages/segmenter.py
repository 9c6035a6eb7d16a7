"""The sans-I/O utterance segmenter: VAD frame decisions in, utterance boundaries out.

No asyncio, no clocks, no models: :class:`Segmenter` is a pure state machine fed one fixed-size
frame at a time together with the VAD's speech/non-speech decision for it, and :class:`Framer` cuts
arbitrary chunks into those frames. Every boundary is an exact sample index on the source's timeline.

Rules (all lengths rounded up to whole frames):

* Up to ``pre_roll`` of audio before the first speech frame is kept (never audio from before the
  previous utterance's end).
* A candidate becomes an utterance (:class:`SpeechStart`) once its speech span -- first to last
  speech frame, short pauses included -- reaches ``min_speech``; shorter bursts are discarded.
* ``end_silence`` of non-speech after the last speech frame ends the utterance
  (:class:`UtteranceEnd`), keeping ``post_roll`` of that silence.
* An utterance reaching ``max_utterance`` is cut there (``forced=True``); the speech that follows
  starts a new candidate with no pre-roll, so no sample belongs to two utterances; when it resumes
  within ``end_silence`` it continues the cut utterance and is kept however short.
* :meth:`Segmenter.flush` (end of input) ends a confirmed utterance and drops an unconfirmed one.
* End of turn: with ``turn_pause_ms`` set, a pause of that length inside a confirmed utterance is
  reported once (:class:`TurnPause`). A pause is either VAD silence, or -- because the VAD's hangover
  hides most of a 150-250 ms gap between two people -- 10 ms sub-frames more than ``QUIET_BELOW_PEAK_DB``
  under the utterance's loudest one. The caller may then end the utterance right there
  (:meth:`Segmenter.end_turn`, e.g. when the words so far end a sentence) before it feeds the next frame;
  otherwise the utterance goes on as usual. It may also end it at an earlier pause, once speech has
  resumed (``end_turn(at=...)``, e.g. when the words heard since confirm the sentence end): what follows
  the cut is then the next utterance, begun at the cut, with no sample in both.
* Early start: with ``early_start_ms`` set (taken as ``post_roll`` when shorter), once a confirmed
  utterance has had that much silence, :class:`EndPreview` carries the utterance it *will be* if that
  silence ends it -- the same samples, since nothing after the post-roll is kept -- so that work on it
  can start before ``end_silence`` has passed. Where utterances end does not change.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from training.audio import SAMPLE_RATE_HZ

__all__ = ["EndPreview", "Framer", "Segmenter", "SegmenterParams", "SpeechStart", "TurnPause", "UtteranceEnd"]


@dataclass(frozen=True, slots=True)
class SegmenterParams:
    """Segmentation lengths in milliseconds (see the module docstring for their meaning)."""

    frame_samples: int
    sample_rate_hz: int = SAMPLE_RATE_HZ
    pre_roll_ms: int = 300
    post_roll_ms: int = 200
    min_speech_ms: int = 250
    max_utterance_ms: int = 15000
    end_silence_ms: int = 500
    turn_pause_ms: int = 0  # 0: no TurnPause outputs
    # The caller's rules for a TurnPause: end the turn there only once the next pause's reading (or one made
    # after turn_confirm_ms more audio, whichever is first) confirms it; a comma there confirms it too when
    # the voice changes across the pause by this score (0: never).
    turn_confirm: bool = False
    turn_confirm_ms: int = 600
    turn_voice_score: float = 0.0
    # ... and it stands whatever the reading says when the speaker encoder hears another voice after the pause
    # (embeddings' cosine similarity under this; 0: never), as does a pause whose reading ended no sentence.
    turn_voice_similarity: float = 0.0
    early_start_ms: int = 0  # 0: no EndPreview outputs; never before post_roll_ms

    def __post_init__(self) -> None:
        if self.frame_samples <= 0:
            raise ValueError(f"frame_samples must be positive, got {self.frame_samples}")
        lengths = (
            "pre_roll_ms",
            "post_roll_ms",
            "min_speech_ms",
            "end_silence_ms",
            "turn_pause_ms",
            "turn_confirm_ms",
            "early_start_ms",
        )
        for name in lengths:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_utterance_ms * self.sample_rate_hz < 1000 * self.frame_samples:
            raise ValueError("max_utterance_ms must be at least one frame long")

    def frames(self, ms: int) -> int:
        """``ms`` as a whole number of frames, rounded up."""
        return math.ceil(ms * self.sample_rate_hz / (1000 * self.frame_samples))


@dataclass(frozen=True, slots=True)
class SpeechStart:
    """An utterance was confirmed; it begins at ``start_sample`` (pre-roll included)."""

    start_sample: int


@dataclass(frozen=True, slots=True)
class UtteranceEnd:
    """A finished utterance: ``pcm`` covers ``[start_sample, end_sample)`` exactly."""

    start_sample: int
    end_sample: int
    speech_end_sample: int  # end of the last speech frame (before post-roll)
    pcm: np.ndarray
    forced: bool = False  # cut at max_utterance, not ended by silence


@dataclass(frozen=True, slots=True)
class TurnPause:
    """A confirmed utterance has paused for ``turn_pause_ms``: a chance to end it (:meth:`Segmenter.end_turn`)."""

    speech_end_sample: int


@dataclass(frozen=True, slots=True)
class EndPreview:
    """A confirmed utterance has had ``early_start_ms`` of silence: if the silence goes on until it ends the
    utterance, that utterance is ``utterance``, sample for sample (speech resuming makes this moot)."""

    utterance: UtteranceEnd


SegmenterOutput = SpeechStart | UtteranceEnd | TurnPause | EndPreview

# A sub-frame this far under the utterance's loudest is a pause, whatever the VAD says (its hangover).
QUIET_BELOW_PEAK_DB = 30.0
_SUBFRAME_MS = 10


class Framer:
    """Cuts chunks of any size into ``frame_samples`` frames, tracking their start samples.

    A chunk whose start does not follow the previous one (dropped audio) discards the partial frame,
    and :attr:`gap` reports it so the caller can end the current utterance first.
    """

    def __init__(self, frame_samples: int) -> None:
        self.frame_samples = frame_samples
        self._pending = np.zeros(0, dtype=np.int16)
        self._pending_start = 0

    @property
    def next_sample(self) -> int:
        """The sample index the next chunk is expected to start at."""
        return self._pending_start + self._pending.size

    def push(self, pcm: np.ndarray, start_sample: int) -> tuple[bool, list[tuple[int, np.ndarray]]]:
        """Return (gap, frames) where frames are ``(start_sample, frame)`` pairs."""
        gap = start_sample != self.next_sample and (self._pending.size > 0 or self._pending_start > 0)
        if start_sample != self.next_sample:
            self._pending = np.zeros(0, dtype=np.int16)
            self._pending_start = start_sample
        buf = np.concatenate([self._pending, pcm]) if self._pending.size else pcm
        n = buf.size // self.frame_samples
        frames = [
            (self._pending_start + i * self.frame_samples, buf[i * self.frame_samples : (i + 1) * self.frame_samples])
            for i in range(n)
        ]
        self._pending = buf[n * self.frame_samples :].copy()
        self._pending_start += n * self.frame_samples
        return gap, frames


class Segmenter:
    """Pure utterance state machine over (frame, is_speech) pairs; see the module docstring."""

    def __init__(self, params: SegmenterParams) -> None:
        self.params = params
        self._pre_frames = params.frames(params.pre_roll_ms)
        self._post_frames = params.frames(params.post_roll_ms)
        self._min_frames = max(1, params.frames(params.min_speech_ms))
        self._end_frames = max(1, params.frames(params.end_silence_ms))
        self._turn_frames = params.frames(params.turn_pause_ms) if params.turn_pause_ms else 0
        early = max(params.frames(params.early_start_ms), self._post_frames)
        self._early_frames = early if params.early_start_ms else 0
        sub = params.sample_rate_hz * _SUBFRAME_MS // 1000
        self._sub = sub if params.frame_samples % sub == 0 else params.frame_samples
        self._sub_ms = self._sub * 1000 / params.sample_rate_hz
        self._peak_db = -200.0  # the open utterance's loudest sub-frame
        self._quiet_ms = 0.0  # the current run of quiet sub-frames
        self._quiet_start = 0  # where that run began (sample)
        self._quiet_reported = False
        self._turn_cut = 0  # where end_turn() cuts (sample)
        self._max_frames = max(1, params.max_utterance_ms * params.sample_rate_hz // (1000 * params.frame_samples))
        self._preroll: deque[tuple[int, np.ndarray]] = deque(maxlen=max(1, self._pre_frames))
        self._frames: list[tuple[int, np.ndarray]] = []  # the candidate/utterance, pre-roll included
        self._flags: list[bool] = []  # the VAD decision of each frame in self._frames
        self._active = False
        self._confirmed = False
        self._first_speech = 0  # index into self._frames
        self._last_speech = 0
        # Frames of silence since a forced split (None: no split pending). Speech resuming within
        # end_silence continues the cut utterance, so it needs no min_speech to be kept.
        self._since_forced: int | None = None

    @property
    def in_utterance(self) -> bool:
        """True while a confirmed utterance is open."""
        return self._confirmed

    def push(self, start_sample: int, frame: np.ndarray, is_speech: bool) -> list[SegmenterOutput]:
        """Feed one frame (which must start where the previous one ended, unless after :meth:`flush`)."""
        out: list[SegmenterOutput] = []
        if not self._active:
            if not is_speech:
                if self._since_forced is not None:
                    self._since_forced = self._since_forced + 1 if self._since_forced + 1 < self._end_frames else None
                if self._pre_frames:
                    self._preroll.append((start_sample, frame))
                return out
            self._frames = list(self._preroll) if self._pre_frames else []
            self._flags = [False] * len(self._frames) + [True]
            self._preroll.clear()
            self._frames.append((start_sample, frame))
            self._active = True
            self._confirmed = False
            self._first_speech = self._last_speech = len(self._frames) - 1
        else:
            self._frames.append((start_sample, frame))
            self._flags.append(is_speech)
            if is_speech:
                self._last_speech = len(self._frames) - 1
        index = len(self._frames) - 1
        continuing = self._since_forced is not None
        if not self._confirmed and (continuing or self._last_speech - self._first_speech + 1 >= self._min_frames):
            self._confirmed = True
            self._since_forced = None
            # Lengths that barely fit max_utterance (long pre-roll, long min_speech): give up pre-roll first.
            drop = min(max(0, len(self._frames) - self._max_frames + 1), self._first_speech)
            if drop:
                self._frames = self._frames[drop:]
                self._flags = self._flags[drop:]
                self._first_speech -= drop
                self._last_speech -= drop
            out.append(SpeechStart(self._frames[0][0]))
            index = len(self._frames) - 1
        silence = index - self._last_speech
        if self._turn_frames:
            pause = self._turn_pause(start_sample, frame, silence)
            if pause is not None and self._confirmed:
                out.append(pause)
        if silence >= max(self._end_frames, self._post_frames):
            if self._confirmed:
                out.append(self._finish(self._last_speech + self._post_frames + 1, forced=False))
            else:
                self._discard()
        elif self._confirmed and len(self._frames) >= self._max_frames:
            out += self._split_forced()
        elif self._confirmed and silence == self._early_frames > 0:
            # What the end above will keep once the silence reaches end_silence (all of it is here now).
            out.append(EndPreview(self._utterance(self._last_speech + self._post_frames + 1, forced=False)))
        return out

    def _split_forced(self) -> list[SegmenterOutput]:
        """Cut exactly ``max_utterance``; speech already buffered past the cut continues at once."""
        out: list[SegmenterOutput] = []
        while self._confirmed and len(self._frames) >= self._max_frames:
            rest = self._frames[self._max_frames :]
            rest_flags = self._flags[self._max_frames :]
            last_in_rest = self._last_speech - self._max_frames
            out.append(self._finish(self._max_frames, forced=True))
            if last_in_rest >= 0:  # the talker goes on: the rest is the next part of the same speech
                # A pause may open the rest: keep at most a pre-roll of it (less than the maximum), so that
                # no part is all pause.
                skip = max(0, rest_flags.index(True) - min(self._pre_frames, self._max_frames - 1))
                rest, rest_flags, last_in_rest = rest[skip:], rest_flags[skip:], last_in_rest - skip
                self._preroll.clear()
                self._frames, self._flags = rest, rest_flags
                self._active = self._confirmed = True
                self._first_speech, self._last_speech = rest_flags.index(True), last_in_rest
                out.append(SpeechStart(rest[0][0]))
            else:
                self._since_forced = len(rest) if len(rest) < self._end_frames else None
        return out

    def _turn_pause(self, start_sample: int, frame: np.ndarray, silence: int) -> TurnPause | None:
        """Track quiet sub-frames; a :class:`TurnPause` when a pause reaches ``turn_pause_ms`` (once each)."""
        x = frame.astype(np.float64)
        n = x.size // self._sub
        db = 10 * np.log10(np.mean(x[: n * self._sub].reshape(n, self._sub) ** 2, axis=1) + 1.0)
        self._peak_db = max(self._peak_db, float(db.max()))
        for k, level in enumerate(db):
            if level < self._peak_db - QUIET_BELOW_PEAK_DB:
                if self._quiet_ms == 0:
                    self._quiet_start = start_sample + k * self._sub
                self._quiet_ms += self._sub_ms
            else:
                self._quiet_ms = 0.0
                self._quiet_reported = False
        if self._quiet_ms >= self.params.turn_pause_ms and not self._quiet_reported and silence < self._end_frames:
            self._quiet_reported = True
            self._turn_cut = self._quiet_start
            return TurnPause(self._quiet_start)
        if self._turn_frames == silence < self._end_frames and not self._quiet_reported:
            last = self._frames[self._last_speech]
            self._turn_cut = last[0] + last[1].size
            return TurnPause(self._turn_cut)
        return None

    def end_turn(self, at: int | None = None) -> list[SegmenterOutput]:
        """End the open utterance at a pause: one frame past where it began (``at``, a
        :attr:`TurnPause.speech_end_sample`; default the last one reported), at most ``post_roll`` past the
        last speech frame before it. When speech was already heard after that pause, it goes on as the next
        utterance, begun at the cut (confirmed at once when it already reaches ``min_speech``); otherwise the
        rest may be the next utterance's pre-roll. No-op when none is open."""
        if not (self._active and self._confirmed):
            return []
        at = self._turn_cut if at is None else at
        cut = next((i for i, (start, _) in enumerate(self._frames) if start >= at), len(self._frames))
        last_before = self._last_spoken(min(cut, len(self._frames) - 1), self._first_speech)
        keep = max(self._first_speech + 1, min(cut + 1, last_before + self._post_frames + 1, len(self._frames)))
        rest, rest_flags = self._frames[keep:], self._flags[keep:]
        quiet = (self._peak_db, self._quiet_ms, self._quiet_start, self._quiet_reported)
        out: list[SegmenterOutput] = [self._finish(keep, forced=False)]
        if True in rest_flags:
            # The speech after the cut was heard already: the next utterance starts with it, and the pause it
            # may be in now is the same pause (not reported twice).
            self._preroll.clear()
            self._frames, self._flags = rest, rest_flags
            self._active = True
            self._first_speech = rest_flags.index(True)
            self._last_speech = len(rest_flags) - 1 - rest_flags[::-1].index(True)
            self._peak_db, self._quiet_ms, self._quiet_start, self._quiet_reported = quiet
            if self._last_speech - self._first_speech + 1 >= self._min_frames:
                self._confirmed = True
                out.append(SpeechStart(rest[0][0]))
        return out

    @property
    def current_start(self) -> int:
        """The sample :meth:`current_pcm` begins at (0 when no utterance is open)."""
        return self._frames[0][0] if self._active and self._frames else 0

    def current_pcm(self) -> np.ndarray:
        """The open utterance's audio so far (pre-roll and the pause included); empty when none is open."""
        if not self._active:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([f for _, f in self._frames])

    def flush(self) -> list[SegmenterOutput]:
        """End of input: close a confirmed utterance, drop an unconfirmed candidate, forget pre-roll."""
        out: list[SegmenterOutput] = []
        if self._active and self._confirmed:
            out.append(self._finish(min(len(self._frames), self._last_speech + self._post_frames + 1), forced=False))
        self._reset()
        self._preroll.clear()
        self._since_forced = None
        return out

    def _utterance(self, keep: int, *, forced: bool) -> UtteranceEnd:
        """The open utterance's first ``keep`` frames as an :class:`UtteranceEnd` (the state is unchanged)."""
        kept = self._frames[:keep]
        start = kept[0][0]
        end = kept[-1][0] + kept[-1][1].size
        # The last speech frame inside what is kept (a forced cut may fall in a pause).
        last = self._frames[self._last_spoken(min(self._last_speech, keep - 1), keep - 1)]
        return UtteranceEnd(
            start_sample=start,
            end_sample=end,
            speech_end_sample=last[0] + last[1].size,
            pcm=np.concatenate([f for _, f in kept]),
            forced=forced,
        )

    def _last_spoken(self, upto: int, default: int) -> int:
        """The index of the last speech frame at or before ``upto`` in the open utterance (``default``: none)."""
        return next((i for i in range(upto, -1, -1) if self._flags[i]), default)

    def _finish(self, keep: int, *, forced: bool) -> UtteranceEnd:
        utt = self._utterance(keep, forced=forced)
        rest = self._frames[keep:]
        self._reset()
        # Silence after the post-roll may serve as the next utterance's pre-roll.
        self._preroll.clear()
        if self._pre_frames:
            self._preroll.extend(rest[-self._pre_frames :])
        return utt

    def _discard(self) -> None:
        frames = self._frames
        self._reset()
        self._preroll.clear()
        if self._pre_frames:
            self._preroll.extend(frames[-self._pre_frames :])

    def _reset(self) -> None:
        self._peak_db = -200.0
        self._quiet_ms = 0.0
        self._quiet_reported = False
        self._frames = []
        self._flags = []
        self._active = False
        self._confirmed = False
        self._first_speech = self._last_speech = 0
