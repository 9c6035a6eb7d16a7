"""The text branch and its past-context module on a tiny random BERT (seconds, no packaged weights).

* speaker tags are per dialogue, in order of first appearance; windows hold only earlier lines;
* stage 1 (fine-tune encoder + linear head) learns a keyword task; the float16 checkpoint reloads;
* stage 2 (context module over cached encodings) learns a task only the previous line can solve,
  and the predictor reads cached past encodings exactly as the stream passes them.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.tiny_encoder import make_tiny_encoder
from training.context import RELATION_OTHER, RELATION_SAME, RELATION_UNKNOWN, past_windows
from training.context_train import ContextOptions, encode_split, predict_split, train_context, train_context_cv
from training.data import LABELS, Example
from training.inference import EmotionPredictor
from training.model import FusionClassifier
from training.model_config import ModelConfig
from training.text_branch import (
    TextBranchOptions,
    both_tag_forms,
    dialogue_pasts,
    encode_pooled,
    speaker_tags,
    tagged,
    train_text_branch,
)

KEYWORDS = {"furious": 0, "delighted": 3, "terrified": 2}  # anger, joy, fear


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # A tiny model on shared cores: one intra-op thread is both faster and steadier.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(encoder: Path) -> FusionClassifier:
    torch.manual_seed(0)
    cfg = ModelConfig(labels=LABELS, mode="text", text_encoder=str(encoder), text_trainable_layers=2,
                      text_head="linear", max_text_tokens=16)  # fmt: skip
    return FusionClassifier(cfg)


def _keyword_rows(n: int, seed: int, split: str) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        word, label = rng.choice(list(KEYWORDS.items()))
        out.append(Example(f"meld/{split}/dia{i // 3}_utt{i % 3}", label, f"honestly i am {word} right now",
                           speaker=f"p{i % 2}", corpus="meld"))  # fmt: skip
    return out


def test_speaker_tags_are_per_dialogue_in_order_of_first_appearance() -> None:
    rows = [
        Example("meld/train/dia10_utt1", 4, "b", speaker="Ross"),
        Example("meld/train/dia10_utt0", 4, "a", speaker="Monica"),
        Example("meld/train/dia2_utt0", 4, "c", speaker="Ross"),
        Example("meld/train/dia10_utt2", 4, "d", speaker="Monica"),
        Example("meld/train/dia2_utt1", 4, "e", speaker=""),
    ]
    assert speaker_tags(rows) == ["S2", "S1", "S1", "S1", "S?"]
    assert tagged(" hi ", "S1") == "S1: hi"


def test_past_windows_hold_only_earlier_lines_of_the_same_dialogue_and_are_bounded() -> None:
    dialogues = ["a", "a", "b", "a", "a", "b"]
    speakers = ["x", "y", "x", "x", "", "z"]
    windows = past_windows(dialogues, speakers, 2)
    assert windows[0] == [] and windows[2] == []
    assert windows[1] == [(0, RELATION_OTHER)]
    assert windows[3] == [(0, RELATION_SAME), (1, RELATION_OTHER)]
    assert windows[4] == [(1, RELATION_UNKNOWN), (3, RELATION_UNKNOWN)]  # bounded to 2, oldest first
    assert windows[5] == [(2, RELATION_OTHER)]
    assert all(j < i for i, w in enumerate(windows) for j, _ in w)  # never the future


def test_stage1_learns_keywords_and_the_fp16_checkpoint_reloads(encoder: Path, tmp_path: Path) -> None:
    model = _model(encoder)
    train, dev = _keyword_rows(60, 0, "train"), _keyword_rows(18, 1, "dev")
    opts = TextBranchOptions(epochs=20, batch_size=8, lr_encoder=1e-3, lr_head=3e-2, seed=0)
    result = train_text_branch(model, train, dev, opts, torch.device("cpu"))
    assert result.best_dev_weighted_f1 >= 0.9  # chance is about 1/3
    path = model.save(tmp_path / "m.pt", text_encoder_dtype="float16")
    loaded = FusionClassifier.from_checkpoint(path, device="cpu")
    enc = model.tokenize(["S1: honestly i am furious right now"])
    with torch.no_grad():
        a = model.text_logits(model.pool_text(enc["input_ids"], enc["attention_mask"]))
        b = loaded.text_logits(loaded.pool_text(enc["input_ids"], enc["attention_mask"]))
    assert torch.allclose(a, b, atol=2e-2)
    assert loaded.checkpoint_meta["text_encoder_dtype"] == "float16"


def test_stage1_that_gives_every_dev_line_one_label_raises_rather_than_returns(encoder: Path) -> None:
    from training.metrics import TrainingDiverged

    model = _model(encoder)
    head = model.text_head[-1]
    with torch.no_grad():  # no learning rate and a head that answers neutral: a run that diverged
        head.weight.zero_()
        head.bias.zero_()
        head.bias[LABELS.index("neutral")] = 5.0
    train, dev = _keyword_rows(24, 0, "train"), _keyword_rows(18, 1, "dev")
    opts = TextBranchOptions(epochs=2, batch_size=8, lr_encoder=0.0, lr_head=0.0, seed=0)
    with pytest.raises(TrainingDiverged, match=r"every one of the 18 dev lines 'neutral'.*--lr-encoder"):
        train_text_branch(model, train, dev, opts, torch.device("cpu"))


def _echo_dialogues(n_dialogues: int, seed: int, split: str) -> list[Example]:
    """Line 0 names an emotion; line 1 ("wow really") takes the label of line 0: only context solves it."""
    rng = random.Random(seed)
    out = []
    for d in range(n_dialogues):
        word, label = rng.choice(list(KEYWORDS.items()))
        out.append(Example(f"meld/{split}/dia{d}_utt0", label, f"i am {word}", speaker="p1", corpus="meld"))
        out.append(Example(f"meld/{split}/dia{d}_utt1", label, "wow really", speaker="p2", corpus="meld"))
    return out


def test_context_module_learns_what_only_the_previous_line_tells(encoder: Path) -> None:
    cpu = torch.device("cpu")
    model = _model(encoder)
    train, dev = _echo_dialogues(60, 0, "train"), _echo_dialogues(20, 1, "dev")
    train_text_branch(model, train, dev, TextBranchOptions(epochs=20, batch_size=8, lr_encoder=1e-3,
                                                           lr_head=3e-2, seed=0), cpu)  # fmt: skip
    enc_train, enc_dev = encode_split(model, train, cpu), encode_split(model, dev, cpu)
    alone = predict_split(model, enc_dev, window=0, speakers=True, device=cpu).argmax(1)
    echo = np.arange(len(dev)) % 2 == 1
    acc_alone = float((alone[echo] == enc_dev.labels[echo]).mean())
    train_context(model, enc_train, enc_dev, ContextOptions(window=2, epochs=25, lr=1e-2, seed=0), cpu)
    with_ctx = predict_split(model, enc_dev, window=2, speakers=True, device=cpu).argmax(1)
    acc_ctx = float((with_ctx[echo] == enc_dev.labels[echo]).mean())
    assert acc_alone <= 0.6 and acc_ctx >= 0.9, (acc_alone, acc_ctx)

    # The predictor reads cached past encodings (as the stream passes them) and gives the same answer,
    # and a row may name an earlier row of the same call but never a later one.
    predictor = EmotionPredictor(model)
    assert predictor.uses_context and predictor.speaker_tags
    first, second = dev[0], dev[1]
    p0 = predictor.predict([first.text], [None], speakers=["S1"], past=[[]])[0]
    assert p0.text_embedding is not None
    cached = predictor.predict([second.text], [None], speakers=["S2"], past=[[(p0.text_embedding, RELATION_OTHER)]])
    same_call = predictor.predict([first.text, second.text], [None, None], speakers=["S1", "S2"],
                                  past=[[], [(0, RELATION_OTHER)]])  # fmt: skip
    assert cached[0].label == same_call[1].label == LABELS[second.label]
    assert same_call[1].context_used == 1
    assert np.allclose(list(cached[0].scores.values()), list(same_call[1].scores.values()), atol=1e-5)
    with pytest.raises(ValueError, match="earlier rows"):
        predictor.predict([first.text, second.text], [None, None], past=[[(1, RELATION_OTHER)], []])


def test_transition_context_fitted_on_dev_by_cross_validation(encoder: Path) -> None:
    cpu = torch.device("cpu")
    model = _model(encoder)
    train, dev, test = _echo_dialogues(60, 0, "train"), _echo_dialogues(40, 1, "dev"), _echo_dialogues(20, 2, "test")
    train_text_branch(model, train, dev, TextBranchOptions(epochs=20, batch_size=8, lr_encoder=1e-3,
                                                           lr_head=3e-2, seed=0), cpu)  # fmt: skip
    enc_dev, enc_test = encode_split(model, dev, cpu), encode_split(model, test, cpu)
    opts = ContextOptions(window=2, kind="transition", epochs=15, lr=5e-2, folds=3, unknown_speaker_prob=0.0, seed=0)
    result = train_context_cv(model, enc_dev, opts, cpu)
    assert 1 <= result.best_epoch <= 15 and len(result.history) == 15
    echo = np.arange(len(test)) % 2 == 1
    with_ctx = predict_split(model, enc_test, window=2, speakers=True, device=cpu).argmax(1)
    assert float((with_ctx[echo] == enc_test.labels[echo]).mean()) >= 0.9
    assert model.config.context["kind"] == "transition"
    # Fitted again over another window (a stage 2 on an --init-from checkpoint): the old module is replaced.
    wider = train_context_cv(model, enc_dev, dataclasses.replace(opts, window=4), cpu)
    assert len(wider.history) == 15 and model.config.context["max_utterances"] == 4


def test_distillation_pulls_the_student_towards_the_teacher(encoder: Path, tmp_path: Path) -> None:
    """With only the teacher's soft labels (weight 1), the student learns what the teacher says, even
    where it contradicts the hard label; the teacher's logits are computed once, then read from the cache."""
    from training.distill import teacher_logits
    from training.text_branch import distill_loss

    train, dev = _keyword_rows(60, 0, "train"), _keyword_rows(18, 1, "dev")
    teacher_model = _model(encoder)
    plain = TextBranchOptions(epochs=20, batch_size=8, lr_encoder=1e-3, lr_head=3e-2, seed=0)
    train_text_branch(teacher_model, train, dev, plain, torch.device("cpu"))
    teacher_path = teacher_model.save(tmp_path / "teacher.pt", text_encoder_dtype="float32")
    # The student's hard labels are all wrong (shifted by one class); only the teacher knows the keywords.
    wrong = [Example(e.uid, (e.label + 1) % len(LABELS), e.text, speaker=e.speaker, corpus=e.corpus) for e in train]
    cache = tmp_path / "cache"
    soft = teacher_logits(teacher_path, wrong, LABELS, torch.device("cpu"), cache_dir=cache)
    assert soft.shape == (2 * len(wrong), len(LABELS)) and len(both_tag_forms(wrong)) == 2 * len(wrong)
    assert torch.equal(teacher_logits(teacher_path, wrong, LABELS, torch.device("cpu"), cache_dir=cache), soft)
    assert len(list(cache.iterdir())) == 1
    student = _model(encoder)
    opts = TextBranchOptions(epochs=20, batch_size=8, lr_encoder=1e-3, lr_head=3e-2, seed=0, distill_weight=1.0)
    result = train_text_branch(student, wrong, dev, opts, torch.device("cpu"), teacher=soft)
    assert result.best_dev_weighted_f1 >= 0.9  # dev carries the true labels
    with pytest.raises(ValueError, match="teacher logits"):
        train_text_branch(_model(encoder), wrong, dev, opts, torch.device("cpu"), teacher=soft[:10])
    with pytest.raises(ValueError, match="needs the teacher"):
        train_text_branch(_model(encoder), wrong, dev, opts, torch.device("cpu"))
    same = torch.randn(4, len(LABELS))
    assert float(distill_loss(same, same, 2.0)) == pytest.approx(0.0, abs=1e-6)


def test_lines_the_teacher_did_not_score_learn_from_their_labels(encoder: Path) -> None:
    """Extra rows appended after the scored ones (NaN teacher rows, ``with_unscored``) train on their
    labels alone: here only they carry the keyword "terrified", and the student learns it."""
    from training.distill import with_unscored

    scored = [e for e in _keyword_rows(90, 0, "train") if "terrified" not in str(e.text)]
    extra = [e for e in _keyword_rows(90, 2, "extra") if "terrified" in str(e.text)]
    extra = [Example(f"goemotions/train/{i}", e.label, e.text, corpus="goemotions") for i, e in enumerate(extra)]
    dev = _keyword_rows(30, 1, "dev")
    # The teacher knows nothing (uniform logits): the scored rows learn from their labels and the KL.
    teacher = with_unscored(torch.zeros(2 * len(scored), len(LABELS)), len(extra))
    assert teacher.shape == (2 * (len(scored) + len(extra)), len(LABELS))
    nan_rows = torch.isnan(teacher).any(dim=1).nonzero().flatten().tolist()
    n = len(scored) + len(extra)
    assert nan_rows == [*range(len(scored), n), *range(n + len(scored), 2 * n)]
    opts = TextBranchOptions(epochs=20, batch_size=8, lr_encoder=1e-3, lr_head=3e-2, seed=0, distill_weight=0.5)
    result = train_text_branch(_model(encoder), [*scored, *extra], dev, opts, torch.device("cpu"), teacher=teacher)
    assert result.best_dev_weighted_f1 >= 0.9  # dev has all three keywords
    assert all(np.isfinite(r["train_loss"]) for r in result.history)
    with pytest.raises(ValueError, match="2N, C"):
        with_unscored(torch.zeros(3, len(LABELS)), 1)


def test_extra_rows_are_capped_per_label_and_seeded() -> None:
    from training.corpora import at_most_per_class

    rows = [Example(f"g/{i}", i % 3 if i < 60 else 4, "x", corpus="goemotions") for i in range(65)]
    picked = at_most_per_class(rows, 10, seed=3)
    counts = {lab: sum(e.label == lab for e in picked) for lab in (0, 1, 2, 4)}
    assert counts == {0: 10, 1: 10, 2: 10, 4: 5}
    assert picked == at_most_per_class(rows, 10, seed=3) and picked != at_most_per_class(rows, 10, seed=4)
    assert [e.uid for e in picked] == sorted(e.uid for e in picked)
    with pytest.raises(ValueError, match="per_class"):
        at_most_per_class(rows, 0, seed=3)


def test_extra_rows_read_as_a_known_writer_not_the_unknown_speaker(tmp_path: Path) -> None:
    """``--extra-text`` rows are tagged ``S1`` (each its own dialogue): the unknown tag is what a stream
    without speaker labels sends, and it must not learn the extra corpus's label mix."""
    import argparse

    from training.settings import TrainingConfig, TrainingDataConfig
    from training.text_cli import _extra_text

    go = tmp_path / "goemotions"
    go.mkdir()
    (go / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    lines = [f"comment {i}\t{i % len(LABELS)}\tid{i}" for i in range(40)] + ["two labels\t0,3\tid99"]
    (go / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = TrainingConfig(data=TrainingDataConfig(goemotions_dir=str(go)))
    args = argparse.Namespace(extra_text="goemotions", extra_per_class=2, seed=1)
    rows = _extra_text(args, cfg, tmp_path)
    assert len(rows) == 2 * len(LABELS) and {r.corpus for r in rows} == {"goemotions"}
    assert speaker_tags(rows) == ["S1"] * len(rows)
    assert _extra_text(argparse.Namespace(extra_text=None, extra_per_class=2, seed=1), cfg, tmp_path) == []


def _past_model(encoder: Path, past_lines: int) -> FusionClassifier:
    torch.manual_seed(0)
    cfg = ModelConfig(labels=LABELS, mode="text", text_encoder=str(encoder), text_trainable_layers=2,
                      text_head="linear", max_text_tokens=16, text_past_lines=past_lines,
                      max_pair_tokens=32)  # fmt: skip
    return FusionClassifier(cfg)


def test_a_line_read_with_its_past_pools_its_own_tokens_and_keeps_the_latest_past(encoder: Path) -> None:
    model = _past_model(encoder, 3)
    line = "S1: i am happy"
    alone = model.tokenize([line])
    n = int(alone["attention_mask"].sum())
    enc = model.tokenize([line, line], pasts=["", "S2: " + " ".join(["no"] * 30) + " wow"])
    assert enc["input_ids"][0, :n].tolist() == alone["input_ids"][0].tolist()
    assert int(enc["pool_mask"][0].sum()) == int(enc["pool_mask"][1].sum()) == n
    assert int(enc["attention_mask"][1].sum()) == 32  # cut to max_pair_tokens...
    kept = model.tokenizer.convert_ids_to_tokens(enc["input_ids"][1].tolist())
    assert "wow" in kept and "s2" not in kept  # ...from the oldest end of the past
    assert enc["token_type_ids"][1, :n].eq(0).all() and enc["token_type_ids"][1, n:].eq(1).all()
    with torch.no_grad():
        a = model.pool_text(alone["input_ids"], alone["attention_mask"])
        b = model.pool_text(enc["input_ids"], enc["attention_mask"], enc["pool_mask"], enc["token_type_ids"])
    assert torch.allclose(a[0], b[0], atol=1e-5)  # a line without a past is encoded as it is alone
    assert not torch.allclose(b[0], b[1], atol=1e-3)  # the past changes the line's own encoding


def test_dialogue_pasts_hold_the_latest_earlier_lines_of_the_dialogue_tagged() -> None:
    rows = [Example("meld/dev/dia0_utt1", 4, "so what", speaker="Ross"),
            Example("meld/dev/dia1_utt0", 4, "other dialogue", speaker="Ross"),
            Example("meld/dev/dia0_utt0", 4, "hi", speaker="Monica"),
            Example("meld/dev/dia0_utt2", 4, "well", speaker="Monica")]  # fmt: skip
    assert dialogue_pasts(rows, 1) == ["S1: hi", "", "", "S2: so what"]
    assert dialogue_pasts(rows, 2) == ["S1: hi", "", "", "S1: hi S2: so what"]
    assert dialogue_pasts(rows, 2, unknown=True)[3] == "S?: hi S?: so what"


def test_a_text_branch_reading_past_lines_learns_what_only_the_previous_line_tells(encoder: Path, tmp_path: Path,
                                                                                   ) -> None:  # fmt: skip
    cpu = torch.device("cpu")
    train, dev = _echo_dialogues(60, 0, "train"), _echo_dialogues(40, 1, "dev")
    echo = np.arange(len(dev)) % 2 == 1
    labels = np.array([e.label for e in dev])
    texts = [tagged(str(e.text), t) for e, t in zip(dev, speaker_tags(dev), strict=True)]
    opts = TextBranchOptions(epochs=20, batch_size=8, lr_encoder=1e-3, lr_head=3e-2, seed=0, unknown_speaker_prob=0.0)
    accuracy = {}
    for k in (0, 1):
        model = _past_model(encoder, k)
        train_text_branch(model, train, dev, opts, cpu)
        pooled = encode_pooled(model, texts, cpu, pasts=dialogue_pasts(dev, k) if k else None)
        with torch.no_grad():
            pred = model.text_logits(pooled).argmax(1).numpy()
        accuracy[k] = float((pred[echo] == labels[echo]).mean())
    assert accuracy[0] <= 0.6 and accuracy[1] >= 0.9, accuracy
    with torch.no_grad():
        pred_alone = model.text_logits(encode_pooled(model, texts, cpu)).argmax(1).numpy()
    assert float((pred_alone[echo] == labels[echo]).mean()) <= 0.6  # read alone, the echo line is a guess

    # The predictor reads the past lines a stream hands it as training read them.
    predictor = EmotionPredictor(model)
    assert predictor.past_lines == 1
    (alone,) = predictor.predict([dev[1].text], [None], speakers=["S2"])
    (read,) = predictor.predict([dev[1].text], [None], speakers=["S2"], past_lines=[[("S1", str(dev[0].text))]])
    assert alone.context_used == 0 and read.context_used == 1
    assert read.text_embedding is not None and np.allclose(read.text_embedding, pooled[1].numpy(), atol=1e-5)
    assert read.label == LABELS[int(pred[1])]

    # `emostream-train evaluate --context none` reads each line alone, as the stream does with context = false.
    from training.text_cli import evaluate_text_context

    meld = tmp_path / "meld"
    meld.mkdir()
    with (meld / "dev_sent_emo.csv").open("w", encoding="utf-8") as fh:
        fh.write("Utterance,Speaker,Emotion,Dialogue_ID,Utterance_ID\n")
        for e in dev:
            dia, utt = e.uid.rsplit("/", 1)[1].removeprefix("dia").split("_utt")
            fh.write(f"{e.text},{e.speaker},{LABELS[e.label]},{dia},{utt}\n")
    none = evaluate_text_context(model, meld, "dev", "none", cpu)
    assert none["accuracy"] == pytest.approx(float((pred_alone == labels).mean()))


def test_a_past_lines_teacher_scores_lines_with_their_past_and_teachers_average(encoder: Path, tmp_path: Path) -> None:
    """A past-lines teacher scores every training line as it was trained to read it (with its dialogue's
    past, in the row's tag form), not alone; several teachers give the mean of their logits."""
    from training.distill import ensemble_logits, teacher_logits

    rows = _echo_dialogues(4, 0, "train")
    first = _past_model(encoder, 1)
    path = first.save(tmp_path / "past.pt", text_encoder_dtype="float32")
    teacher = FusionClassifier.from_checkpoint(path)
    cpu = torch.device("cpu")
    soft = teacher_logits(path, rows, LABELS, cpu, cache_dir=tmp_path / "cache")
    forms = both_tag_forms(rows)
    pasts = [*dialogue_pasts(rows, 1), *dialogue_pasts(rows, 1, unknown=True)]
    assert pasts[1] == "S1: i am " + str(rows[0].text).split()[-1] and pasts[len(rows) + 1].startswith("S?: ")
    with torch.no_grad():
        read = teacher.text_logits(encode_pooled(teacher, forms, cpu, pasts=pasts))
        alone = teacher.text_logits(encode_pooled(teacher, forms, cpu))
    assert torch.allclose(soft, read, atol=1e-5)
    assert torch.allclose(soft[0], alone[0], atol=1e-5)  # a dialogue's first line has no past
    assert not torch.allclose(soft[1], alone[1], atol=1e-4)
    flipped = _past_model(encoder, 1)
    with torch.no_grad():
        flipped.text_head[1].weight.mul_(-1.0)
    other = flipped.save(tmp_path / "other.pt", text_encoder_dtype="float32")
    second = teacher_logits(other, rows, LABELS, cpu, cache_dir=tmp_path / "cache")
    mean = ensemble_logits([path, other], rows, LABELS, cpu, cache_dir=tmp_path / "cache")
    assert torch.allclose(mean, (soft + second) / 2) and not torch.allclose(second, soft)
    with pytest.raises(ValueError, match="at least one teacher"):
        ensemble_logits([], rows, LABELS, cpu)


def test_past_lines_in_the_config_are_checked_and_kept_out_of_checkpoints_without_them() -> None:
    with pytest.raises(ValueError, match="text_head = 'linear'"):
        ModelConfig(labels=LABELS, mode="text", text_past_lines=3)
    with pytest.raises(ValueError, match=r"text_past_lines must lie in \[0, 16\]"):
        ModelConfig(labels=LABELS, mode="text", text_head="linear", text_past_lines=-1)
    with pytest.raises(ValueError, match="max_pair_tokens"):
        ModelConfig(labels=LABELS, mode="text", text_head="linear", text_past_lines=3, max_pair_tokens=64)
    plain = ModelConfig(labels=LABELS, mode="text", text_head="linear")
    assert "text_past_lines" not in plain.to_dict()  # earlier versions still read it
    with_past = ModelConfig(labels=LABELS, mode="text", text_head="linear", text_past_lines=3)
    assert ModelConfig.from_dict(with_past.to_dict()) == with_past


def test_past_lines_with_frozen_layers_stop_at_the_argument_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The frozen layers' cache holds lines read alone: --past-lines needs every layer trained, said up front."""
    from training.cli import main

    base = ["text", "--past-lines", "3", "--data-dir", str(tmp_path / "none"), "--run-dir", str(tmp_path)]
    assert main([*base, "--trainable-layers", "3"]) == 2
    assert "--past-lines trains every layer" in capsys.readouterr().err
    assert main(["text", "--past-lines", "17", "--data-dir", str(tmp_path / "none"), "--run-dir", str(tmp_path)]) == 2
    assert "--past-lines must lie in [0, 16]" in capsys.readouterr().err
