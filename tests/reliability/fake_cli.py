"""``emostream`` exactly as shipped, except that the two models are the scripted fakes (and no speaker stage).

Run as ``python -m tests.reliability.fake_cli run ...`` (with the repository on
``PYTHONPATH``). Faults come from the environment so a test can place them:

* ``FAKE_ASR_FAIL``: comma-separated 1-based transcription calls that raise;
* ``FAKE_ASR_DELAY_S`` / ``FAKE_CLS_DELAY_S``: seconds each transcription / classification takes.
"""

from __future__ import annotations

import os
import sys

import stream.models
from stream.cli import main
from tests.helpers.fakes import FakePredictor, FakeTranscriber


def _fake_models(config: object) -> tuple[FakeTranscriber, FakePredictor]:
    fail = {int(x) for x in os.environ.get("FAKE_ASR_FAIL", "").split(",") if x.strip()}
    return (
        FakeTranscriber(fail_calls=fail, delay_s=float(os.environ.get("FAKE_ASR_DELAY_S", "0"))),
        FakePredictor(delay_s=float(os.environ.get("FAKE_CLS_DELAY_S", "0"))),
    )


async def _no_speakers(config: object, enrolment: object) -> None:
    return None  # the GE2E encoder is a real model: these tests are about faults, not speakers


if __name__ == "__main__":
    stream.models.load_models = _fake_models  # type: ignore[assignment]
    stream.models.speaker_stage_or_none = _no_speakers  # type: ignore[assignment]
    sys.exit(main())
