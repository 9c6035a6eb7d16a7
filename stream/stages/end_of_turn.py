"""What Whisper's reading of an open utterance says about the end of a turn: the check's text rules, sans I/O.

At a short pause inside an utterance the segment stage (:mod:`stream.stages.segment`) has Whisper read
the words so far. :func:`end_candidate` tells whether that reading is a candidate end of turn: a finished
sentence (``.``, ``?``, ``!``; :func:`ends_sentence`) or, where asked, a line that trails off (``by
the...``, ``by the-``; :func:`trails_off`). :meth:`EndCandidate.confirmed_by` tells whether a later
reading of more audio leaves it standing. Words are counted, never compared: two readings of the same
speech often differ in a word or two.

Two marks end a line without ending a sentence, and both rules below read them the same way: an
ellipsis, and a dash right after a word (a word cut off, ``by the-``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stream.records import Transcript

__all__ = ["TRAILING_MIN_WORDS", "EndCandidate", "end_candidate", "ends_sentence", "trails_off"]

# A reading that trails off is a candidate end of turn only with this many words: "Um..." and "I mean..."
# are a speaker's hesitations, not a line left unfinished.
TRAILING_MIN_WORDS = 3

_ELLIPSES = ("...", "…")
_CUT_OFF = r"(?<=\w)[-—]"  # a dash right after a word: the word was cut off ("by the-")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_SENTENCE_END = re.compile(r"[.?!][\"')\]]*$")
_CUT_OFF_END = re.compile(_CUT_OFF + r"$")
# Sentence ends in a later reading: . ? ! (and ...), and a cut-off word ("by the- She has"); commas apart.
_WORD_OR_END = re.compile(_WORD.pattern + r"|[.?!]+|" + _CUT_OFF + r"(?=\s|$)|,")


def ends_sentence(transcript: Transcript) -> bool:
    """Whether Whisper's text ends a sentence (``.``, ``?``, ``!``; not an ellipsis) and was kept."""
    text = transcript.text.strip()
    if transcript.dropped or not text or text.endswith(_ELLIPSES):
        return False
    return _SENTENCE_END.search(text) is not None


def trails_off(transcript: Transcript) -> bool:
    """Whether Whisper's kept text of :data:`TRAILING_MIN_WORDS` words or more ends in an ellipsis or a
    cut-off word (``by the...``, ``by the-``): at a pause it often reads a finished line so, and the later
    reading tells a line that went on."""
    text = transcript.text.strip()
    words = _WORD.findall(text)
    if transcript.dropped or len(words) < TRAILING_MIN_WORDS:
        return False
    # A dash after a letter or two is a word Whisper heard only the start of ("The dogs are s-"): the
    # pause fell inside it.
    return text.endswith(_ELLIPSES) or (_CUT_OFF_END.search(text) is not None and len(words[-1]) > 2)


@dataclass(frozen=True, slots=True)
class EndCandidate:
    """A reading at a pause that may end the turn: how many words it heard, and whether it trailed off
    (``by the...``) rather than ending a sentence."""

    words: int
    trailing: bool

    def confirmed_by(self, later: Transcript, *, voice_changed: bool = False) -> bool:
        """Whether ``later`` (a reading of more audio, from the same start) leaves this end standing.

        A sentence end stands unless ``later`` has more words and none of its sentences ends within one word
        of where this reading ended: the words ran on. With ``voice_changed`` (another voice after the
        pause), a comma there is enough: Whisper joins a quick reply to the line before it with one.

        A trailing end needs more: ``later`` must start a new sentence where this reading stopped -- end one
        there or one word sooner, and two words or more follow before the next end (``by the... door.`` is
        the same line's last word, not a new speaker).

        When ``later`` heard nothing past this reading (a fragment Whisper skipped), nothing speaks
        against it: it stands.
        """
        k = self.words
        words = 0
        ends: list[int] = []
        for token in _WORD_OR_END.findall(later.text):
            if token == ",":
                ends += [words] if voice_changed else []
            elif token[0] in ".?!-—":
                ends.append(words)
            else:
                words += 1
        if words <= k:
            return True
        if self.trailing:
            return any(k - 1 <= end <= k and end + 2 <= words and end + 1 not in ends for end in ends)
        return any(abs(end - k) <= 1 for end in ends if end < words)


def end_candidate(reading: Transcript, *, trailing: bool = True) -> EndCandidate | None:
    """The candidate end of turn ``reading`` is, if any: a finished sentence, or (with ``trailing``) a line
    that trails off (:func:`trails_off`)."""
    if ends_sentence(reading):
        return EndCandidate(len(_WORD.findall(reading.text)), trailing=False)
    if trailing and trails_off(reading):
        return EndCandidate(len(_WORD.findall(reading.text)), trailing=True)
    return None
