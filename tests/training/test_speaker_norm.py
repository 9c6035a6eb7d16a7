"""Speaker-normalised audio features: causal running offsets, per stream and speaker, and the training
simulation of a stream (training/speaker_norm.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.asr_features import EncoderIdentity
from training.audio_branch import AudioBranch, AudioBranchConfig
from training.audio_fusion import AudioFusion
from training.late_fusion import FusionHead, FusionHeadConfig
from training.speaker_norm import (
    RunningOffset,
    StreamSpeakerOffsets,
    running_offsets,
    simulated_stream_offsets,
    speaker_offsets,
)


def test_observe_counts_the_current_row_only_when_asked() -> None:
    before = RunningOffset(1, prior=1.0)
    with_current = RunningOffset(1, prior=1.0, include_current=True)
    rows = [np.array([3.0]), np.array([6.0])]
    assert [float(before.observe("s", r)[0]) for r in rows] == [0.0, 1.5]  # 3 / (1 + 1)
    assert [float(with_current.observe("s", r)[0]) for r in rows] == [1.5, 3.0]  # 3 / 2, 9 / 3


def test_running_offsets_never_read_the_future() -> None:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((12, 3)).astype(np.float32)
    keys = np.array(["a", "b"] * 6)
    off = running_offsets(z, keys, 2.0, include_current=True)
    changed = z.copy()
    changed[7:] += 100.0
    off2 = running_offsets(changed, keys, 2.0, include_current=True)
    np.testing.assert_array_equal(off[:7], off2[:7])
    np.testing.assert_allclose(off[4], z[[0, 2, 4]].sum(0) / (3 + 2.0), rtol=1e-6)  # key "a": rows 0, 2, 4


def test_oracle_offsets_with_and_without_the_row_itself() -> None:
    z = np.array([[1.0], [3.0], [10.0]], np.float32)
    spk = np.array(["a", "a", "b"])
    np.testing.assert_allclose(speaker_offsets(z, spk, 0.0)[:, 0], [3.0, 1.0, 0.0])
    np.testing.assert_allclose(speaker_offsets(z, spk, 1.0, include_current=True)[:, 0], [4 / 3, 4 / 3, 5.0])


def test_speaker_rows_use_their_speaker_unlabelled_rows_the_stream_and_reset_forgets_one_stream() -> None:
    norm = StreamSpeakerOffsets(1, prior=0.0, include_current=False)
    z = np.array([[10.0], [-10.0], [10.0], [0.0], [5.0]], np.float32)
    off = norm.observe(z, ["s", "s", "s", "s", None], ["S1", "S2", "S1", None, "S1"])
    # row 2 (S1): S1's earlier row only (10), not S2's; row 3 (unlabelled): the stream's three rows
    np.testing.assert_allclose(off[:, 0], [0.0, 0.0, 10.0, 10 / 3, 0.0])
    assert norm.count("s") == 4 and norm.count("s", "S1") == 2 and norm.count("s", "S2") == 1
    norm.observe(np.array([[1.0]], np.float32), ["t"], ["S1"])
    norm.reset("s")
    assert norm.count("s") == 0 and norm.count("s", "S1") == 0 and norm.count("t", "S1") == 1
    stream_only = StreamSpeakerOffsets(1, prior=0.0, include_current=False)
    np.testing.assert_allclose(stream_only.observe(z[:3], ["s"] * 3, None)[:, 0], [0.0, 10.0, 0.0])
    with pytest.raises(ValueError, match="3 rows"):
        norm.observe(z[:3], ["s"] * 2, None)


@pytest.mark.parametrize("include_current", [False, True])
def test_a_simulated_stream_holds_each_clip_once_and_never_a_copy_of_the_row_itself(include_current: bool) -> None:
    """Rows are one-hot per clip (3 copies of each of 8 clips, two speakers): a row's offset times its
    denominator is the sum of the clips heard before its own, each once, plus itself when asked."""
    n_clips, copies, prior = 8, 3, 2.0
    clip = np.repeat(np.arange(2 * n_clips), copies)
    z = np.eye(2 * n_clips, dtype=np.float32)[clip]
    spk = np.where(clip < n_clips, "a", "b")
    off = simulated_stream_offsets(z, spk, clip, prior, np.random.default_rng(0), include_current=include_current)
    heard = off > 0
    for r in range(len(z)):
        own = heard[r, clip[r]]
        assert own == include_current  # its own clip: only itself, and only when asked
        others = [c for c in np.flatnonzero(heard[r]) if c != clip[r]]
        assert all(spk[c * copies] == spk[r] for c in others)  # only its own speaker's clips
        k = len(others) + int(include_current)
        np.testing.assert_allclose(off[r][heard[r]], 1.0 / (k + prior), rtol=1e-6)
    # Every copy of a clip sits at the clip's one position; positions are 0..n_clips-1 per speaker.
    for s in ("a", "b"):
        rows = np.flatnonzero(spk == s)
        before = {int(clip[r]): int((heard[r].sum()) - int(include_current)) for r in rows}
        assert sorted(before.values()) == list(range(n_clips))


def _fusion(dim: int) -> AudioFusion:
    cfg = AudioBranchConfig(dim=dim, n_labels=3, hidden=4, members=1, novelty_dims=1, norm_prior=0.0)
    branch = AudioBranch(cfg)
    branch.novelty.low.fill_(1e3)  # never abstain here: the test reads the branch's own output
    branch.novelty.high.fill_(2e3)
    identity = EncoderIdentity("m", "0" * 64, "int8", 8.0)
    return AudioFusion(branch, FusionHead(FusionHeadConfig(n_labels=3)), identity, whisper_model="base")


def test_audio_fusion_normalises_by_speaker_within_a_stream() -> None:
    """Two voices in one stream, each far from the other: by speaker each is centred on itself, so the
    branch sees (nearly) the same input for both; by stream only, they stay apart."""
    fusion = _fusion(2)
    member = fusion.branch.members[0]
    with torch.no_grad():  # a readable branch: logits = the first two inputs (and 0)
        member[1].weight.zero_()
        member[1].bias.zero_()
        member[1].weight[0, 0] = member[1].weight[1, 1] = 1.0
        member[4].weight.zero_()
        member[4].bias.zero_()
        member[4].weight[0, 0] = member[4].weight[1, 1] = 1.0
    voices = np.array([[3.0, 0.0], [0.0, 3.0]] * 4, np.float32)
    streams = ["s"] * 8
    by_speaker, _ = fusion.audio_logp(voices, streams, ["A", "B"] * 4)
    fusion.reset("s")
    by_stream, _ = fusion.audio_logp(voices, streams)
    assert np.abs(by_speaker[-1] - by_speaker[-2]).max() < np.abs(by_stream[-1] - by_stream[-2]).max()
    assert by_stream[-2].argmax() != by_stream[-1].argmax()
