"""Helpers for the dashboard tests: scripted utterances published through the real EventBus.

(Not a conftest.py: other test folders import `conftest` by name, and a second one would shadow it.)"""

from __future__ import annotations

import random
from collections.abc import Sequence

from stream.events.bus import EventBus
from stream.protocol import LABELS

# (text, label): what a replayed dialogue could produce.
SCRIPT: tuple[tuple[str, str], ...] = (
    ("Hello everyone, thanks for joining today.", "neutral"),
    ("I can't believe we actually won the award!", "joy"),
    ("Wait, what? They cancelled the launch?", "surprise"),
    ("This is completely unacceptable, I told you twice.", "anger"),
    ("I'm worried we won't make the deadline.", "fear"),
    ("That's a shame, I really liked working with that team.", "sadness"),
    ("Ugh, the coffee machine is leaking all over again.", "disgust"),
    ("Okay, let's go through the numbers one more time.", "neutral"),
    ("Honestly this is the best news I've heard all year!", "joy"),
    ("Fine. Whatever. Do it your way.", "anger"),
)


def scores_for(label: str, rng: random.Random) -> dict[str, float]:
    """A plausible score vector peaking at ``label``, summing to 1."""
    raw = {name: rng.uniform(0.02, 0.25) for name in LABELS}
    raw[label] = rng.uniform(1.2, 3.5)
    total = sum(raw.values())
    return {name: value / total for name, value in raw.items()}


class Speaker:
    """Publishes one stream's utterances as the pipeline would: speech, transcript, emotion."""

    def __init__(self, bus: EventBus, stream: str, *, seed: int = 0) -> None:
        self.bus, self.stream = bus, stream
        self.rng = random.Random(seed)
        self.t_s = 0.6
        self.uid = 0

    def say(self, text: str, label: str, speaker: str | None = None) -> None:
        start = self.t_s
        end = start + 0.9 + 0.06 * len(text.split()) * 4
        self.uid += 1
        uid = f"{self.stream}-{self.uid}"
        emit = self.bus.emit_nowait
        emit("speech", self.stream, {"state": "start", "utterance_id": uid, "t_s": round(start, 3)})
        emit("speech", self.stream, {"state": "end", "utterance_id": uid, "t_s": round(end, 3)})
        emit(
            "transcript",
            self.stream,
            {
                "utterance_id": uid,
                "start_s": round(start, 3),
                "end_s": round(end, 3),
                "text": text,
                "language": "en",
                **({"speaker": speaker} if speaker else {}),
            },
        )
        emit(
            "emotion",
            self.stream,
            {
                "utterance_id": uid,
                "start_s": round(start, 3),
                "end_s": round(end, 3),
                "text": text,
                "label": label,
                "scores": scores_for(label, self.rng),
                "modalities": ["text", "audio"],
                "latency_ms": round(self.rng.uniform(180, 650), 1),
                **({"speaker": speaker} if speaker else {}),
            },
        )
        self.t_s = end + self.rng.uniform(0.4, 2.2)

    def say_all(self, lines: Sequence[tuple[str, str]]) -> None:
        for text, label in lines:
            self.say(text, label)
