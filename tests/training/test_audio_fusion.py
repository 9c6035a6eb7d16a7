"""The audio branch, its abstention, the learned fusion head and its calibration (no model weights)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.training.meld_fakes import tone
from training.acoustic import ACOUSTIC_DIM, acoustic_features
from training.asr_features import (
    ENCODER_FRAME_SAMPLES,
    EncoderIdentity,
    asr_window_s,
    pool_utterance,
    speech_clip,
    speech_span,
)
from training.audio_branch import AudioBranchConfig, RunningOffset, evaluate_rows, fit_audio_branch, speaker_offsets
from training.audio_fusion import AudioFusion
from training.augment import coloured_noise, stream_like
from training.late_fusion import (
    FusionHead,
    FusionHeadConfig,
    expected_calibration_error,
    fit_fusion_head,
    fit_temperature,
)

SR = 16000


def _utterance(pre_s: float, post_s: float, noise_dbfs: float | None, *, seed: int = 0) -> np.ndarray:
    speech = tone(180, 1.2, seed=seed)
    audio = np.concatenate([np.zeros(int(pre_s * SR), np.float32), speech, np.zeros(int(post_s * SR), np.float32)])
    if noise_dbfs is not None:
        audio = audio + np.float32(10 ** (noise_dbfs / 20)) * coloured_noise(
            audio.size, "pink", np.random.default_rng(seed)
        )
    return audio


# ----------------------------------------------------------------------------- encoder input and pooling


def test_asr_window_matches_the_transcribers_rule() -> None:
    assert asr_window_s(SR * 2, 8.0) == 10
    assert asr_window_s(SR * 2 + 1, 8.0) == 11
    assert asr_window_s(0, 0.0) == 1
    assert asr_window_s(SR * 29, 8.0) == 30  # never past Whisper's window


@pytest.mark.parametrize("noise", [None, -60.0, -45.0])
def test_speech_span_ignores_roll_and_low_noise(noise: float | None) -> None:
    """The pooled span is the speech, however much pre/post-roll and low background noise surround it."""
    audio = _utterance(0.3, 0.2, noise)
    first, end = speech_span(audio)
    speech_first, speech_end = int(0.3 * SR) // ENCODER_FRAME_SAMPLES, int(1.5 * SR) // ENCODER_FRAME_SAMPLES
    assert abs(first - speech_first) <= 3 and abs(end - speech_end) <= 4
    wide = _utterance(1.0, 0.8, noise)
    f2, e2 = speech_span(wide)
    assert (e2 - f2) == pytest.approx(end - first, abs=3)


def test_speech_span_of_silence_is_everything() -> None:
    assert speech_span(np.zeros(SR, np.float32)) == (0, SR // ENCODER_FRAME_SAMPLES)


def test_pool_utterance_pools_only_the_span() -> None:
    audio = _utterance(0.5, 0.5, None)
    n = math.ceil(audio.size / ENCODER_FRAME_SAMPLES)
    frames = np.zeros((n + 100, 4), np.float32)  # + frames of the silence padding: ignored
    first, end = speech_span(audio)
    frames[first:end] = 1.0
    frames[:first] = 50.0  # roll: must not count
    frames[end:] = -50.0
    vec = pool_utterance(audio, frames, prosody=False)
    np.testing.assert_allclose(vec, [1, 1, 1, 1, 0, 0, 0, 0])
    assert pool_utterance(audio, frames).shape == (8 + 10,)
    with_acoustic = pool_utterance(audio, frames, acoustic=True)
    assert with_acoustic.shape == (8 + 10 + ACOUSTIC_DIM,)
    np.testing.assert_allclose(with_acoustic[-ACOUSTIC_DIM:], acoustic_features(speech_clip(audio)))
    np.testing.assert_array_equal(with_acoustic[:18], pool_utterance(audio, frames))


def test_stream_like_copies_vary_roll_noise_and_level() -> None:
    clip = _utterance(1.0, 0.3, None)
    rng = np.random.default_rng(0)
    copies = [stream_like(clip, rng) for _ in range(5)]
    sizes = {c.size for c in copies}
    assert len(sizes) > 1 and all(c.size < clip.size + SR for c in copies)
    assert all(np.abs(c).max() <= 1.0 for c in copies)
    again = stream_like(clip, np.random.default_rng(0))
    np.testing.assert_array_equal(again, copies[0])  # seeded


# ----------------------------------------------------------------------------- audio branch


def test_running_offset_uses_only_the_past_and_shrinks_to_zero() -> None:
    state = RunningOffset(2, prior=2.0)
    np.testing.assert_array_equal(state.offset("s"), [0, 0])
    state.update("s", np.array([4.0, 0.0]))
    np.testing.assert_allclose(state.offset("s"), [4 / 3, 0])  # 4 / (1 + prior)
    np.testing.assert_array_equal(state.offset("other"), [0, 0])
    state.reset("s")
    assert state.count("s") == 0


def test_speaker_offsets_exclude_the_row_itself() -> None:
    z = np.array([[1.0], [3.0], [10.0]], np.float32)
    off = speaker_offsets(z, np.array(["a", "a", "b"]), prior=0.0, rng=None)
    np.testing.assert_allclose(off[:, 0], [3.0, 1.0, 0.0])


def _blobs(n: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = rng.standard_normal((3, 6)) * 0 + np.eye(3, 6) * 3.0
    x = centers[y] + rng.standard_normal((n, 6)) + shift
    spk = np.array([f"s{i % 4}" for i in range(n)])
    return x.astype(np.float32), y, spk


def test_audio_branch_learns_and_abstains_on_unfamiliar_audio() -> None:
    x, y, spk = _blobs(240, 0)
    cfg = AudioBranchConfig(dim=6, n_labels=3, hidden=16, members=2, epochs=15, novelty_dims=4, speaker_norm=False)
    branch = fit_audio_branch(x, y, spk, cfg)
    xt, yt, st = _blobs(90, 1)
    logp = evaluate_rows(branch, xt, st, running=True)
    assert (logp.argmax(1) == yt).mean() > 0.8
    far = xt + 25.0  # nothing like the training audio
    logp_far = evaluate_rows(branch, far, st, running=True)
    entropy = -(np.exp(logp_far) * logp_far).sum(1)
    assert entropy.min() > 0.99 * math.log(3)  # abstains: (nearly) uniform, not a confident guess


def test_speaker_normalisation_removes_a_speaker_offset() -> None:
    x, y, spk = _blobs(240, 2)
    offsets = {f"s{i}": np.random.default_rng(10 + i).standard_normal(6) * 2.5 for i in range(4)}
    x = x + np.stack([offsets[s] for s in spk]).astype(np.float32)
    cfg = AudioBranchConfig(dim=6, n_labels=3, hidden=16, members=1, epochs=40, lr=1e-2, novelty_dims=4, norm_prior=1.0)
    branch = fit_audio_branch(x, y, spk, cfg)
    xt, yt, _ = _blobs(120, 3)
    shifted = xt + np.random.default_rng(99).standard_normal(6).astype(np.float32) * 2.5
    z = torch.from_numpy((shifted - branch.feat_mean.numpy()) / branch.feat_std.numpy()).float()
    off = torch.from_numpy(speaker_offsets(z.numpy(), np.full(len(yt), "new"), 1.0, None))
    with torch.no_grad():
        centered = branch(z - off).argmax(1).numpy()
    assert (centered == yt).mean() > 0.85  # a speaker never heard, normalised by its own statistics


# ----------------------------------------------------------------------------- fusion head and calibration


def _logp(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p, 1e-9, 1.0)).astype(np.float32)


def test_fused_label_is_the_text_label_when_audio_abstains() -> None:
    head = FusionHead(FusionHeadConfig(n_labels=3))
    torch.nn.init.normal_(head.gate[0].weight)  # any gate
    rng = np.random.default_rng(0)
    lt = _logp(rng.dirichlet(np.ones(3), 50))
    uniform = _logp(np.full((50, 3), 1 / 3))
    fused = head(torch.from_numpy(lt), torch.from_numpy(uniform), torch.full((50,), 30.0)).detach().numpy()
    np.testing.assert_array_equal(fused.argmax(1), lt.argmax(1))
    np.testing.assert_allclose(np.exp(fused).sum(1), 1.0, rtol=1e-5)


def test_fusion_head_learns_when_to_trust_which_branch() -> None:
    """Regime A: familiar voice, words neutral, label from the voice. Regime B: unfamiliar voice
    (abstaining audio branch), label from the words. The head must get both right."""
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 3, n)
    onehot = np.eye(3)[y]
    neutral_text = _logp(np.tile([0.2, 0.6, 0.2], (n, 1)))
    good_audio = _logp(0.55 * onehot + 0.45 / 3)
    good_text = _logp(0.6 * onehot + 0.4 / 3)
    flat = _logp(np.full((n, 3), 1 / 3))
    lt = np.concatenate([neutral_text, good_text])
    la = np.concatenate([good_audio, flat])
    nov = np.concatenate([np.full(n, 1.0), np.full(n, 20.0)]).astype(np.float32)
    yy = np.concatenate([y, y])
    head = fit_fusion_head(lt, la, nov, yy, FusionHeadConfig(n_labels=3, epochs=200))
    with torch.no_grad():
        fused = head(torch.from_numpy(lt), torch.from_numpy(la), torch.from_numpy(nov)).numpy()
    assert (fused[:n].argmax(1) == y).mean() > 0.95  # trusts the voice over neutral words
    assert (fused[n:].argmax(1) == y).mean() > 0.95  # trusts the words when the voice is unfamiliar


def test_temperature_recovers_overconfidence_and_lowers_ece() -> None:
    rng = np.random.default_rng(1)
    n = 3000
    true_logits = rng.standard_normal((n, 4)) * 1.5
    p = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=row) for row in p])
    overconfident = true_logits * 3.0
    t = fit_temperature(overconfident, y)
    assert t == pytest.approx(3.0, rel=0.15)
    before = expected_calibration_error(torch.from_numpy(overconfident).log_softmax(-1).numpy(), y)
    after = expected_calibration_error(torch.from_numpy(overconfident / t).log_softmax(-1).numpy(), y)
    assert after < before / 2


def test_audio_fusion_round_trips_through_its_blob() -> None:
    x, y, spk = _blobs(120, 4)
    cfg = AudioBranchConfig(dim=6, n_labels=3, hidden=8, members=1, epochs=5, novelty_dims=3)
    branch = fit_audio_branch(x, y, spk, cfg)
    head = FusionHead(FusionHeadConfig(n_labels=3))
    head.temperature.fill_(1.7)
    fusion = AudioFusion(branch, head, EncoderIdentity("base", "abc", "int8", 8.0), whisper_model="base")
    blob = fusion.to_blob()
    again = AudioFusion.from_blob(blob)
    la, d = fusion.audio_logp(x[:5], ["s", "s", "s", None, None])
    la2, d2 = again.audio_logp(x[:5], ["s", "s", "s", None, None])
    np.testing.assert_allclose(la, la2, atol=2e-2)  # weights are stored in float16
    np.testing.assert_allclose(d, d2, rtol=1e-2)
    assert float(again.head.temperature) == pytest.approx(1.7)
    assert again.accepts_asr("abc", 8.0) and not again.accepts_asr("abc", 5.0) and not again.accepts_asr("x", 8.0)
    assert again.acoustic is False
    with pytest.raises(ValueError, match="format"):
        AudioFusion.from_blob({**blob, "format": 99})
    # The acoustic statistics are part of the features a checkpoint expects; one written before the key
    # existed reads as without them.
    fusion.acoustic = True
    assert AudioFusion.from_blob(fusion.to_blob()).acoustic is True
    old = fusion.to_blob()
    del old["encoder"]["acoustic"]
    assert AudioFusion.from_blob(old).acoustic is False
