"""Training the top layers from the cached output of the frozen ones (``training.text_split``).

* the two halves chained give the encoder's own output, for BERT-style (tiny BERT, MiniLM) and MPNet
  layers (MPNet's relative position bias must be passed to every layer);
* a stage 1 with frozen lower layers trains through the cache and learns a keyword task;
* an ``int8`` checkpoint is a quarter of float32 and reloads to the weights that were evaluated.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from tests.training.test_text_branch import _keyword_rows, _model
from tests.training.tiny_encoder import make_tiny_encoder
from training.checkpoint import round_trip_text
from training.data import LABELS
from training.model import FusionClassifier
from training.model_config import ModelConfig
from training.text_branch import TextBranchOptions, train_text_branch
from training.text_split import LowerCache, lower_states, upper_states
from training.weights import resolve_text_encoder

LINES = ["S1: Oh my god, you guys!", "S?: no.", "S2: What are you doing here at this hour of the night, Ross?"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))


def _check_halves(path: str) -> None:
    enc, tok = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    batch = tok(LINES, padding=True, return_tensors="pt")
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        full = enc(**batch).last_hidden_state
        for n_lower in range(enc.config.num_hidden_layers + 1):
            lower = lower_states(enc, batch["input_ids"], batch["attention_mask"], n_lower)
            upper = upper_states(enc, lower, batch["attention_mask"], n_lower)
            assert torch.allclose(upper[real], full[real], atol=1e-4), (path, n_lower)


def test_the_two_halves_give_the_tiny_encoders_output(tiny: Path) -> None:
    _check_halves(str(tiny))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", "all-mpnet-base-v2"])
def test_the_two_halves_give_the_packaged_encoders_output(name: str) -> None:
    _check_halves(resolve_text_encoder(name).path)


def test_cached_lower_layers_train_the_top_one_and_the_int8_checkpoint_reloads(tiny: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(labels=LABELS, mode="text", text_encoder=str(tiny), text_trainable_layers=1,
                      text_head="linear", max_text_tokens=16)  # fmt: skip
    model = FusionClassifier(cfg)
    assert model.frozen_text_layers == 1
    frozen_before = model.text_encoder.encoder.layer[0].attention.self.query.weight.clone()
    train, dev = _keyword_rows(60, 0, "train"), _keyword_rows(18, 1, "dev")
    opts = TextBranchOptions(epochs=20, batch_size=8, lr_encoder=1e-3, lr_head=3e-2, seed=0)
    result = train_text_branch(model, train, dev, opts, torch.device("cpu"))
    assert result.best_dev_weighted_f1 >= 0.9  # chance is about 1/3
    assert torch.equal(model.text_encoder.encoder.layer[0].attention.self.query.weight, frozen_before)

    round_trip_text(model, "int8")
    int8 = model.save(tmp_path / "int8.pt", text_encoder_dtype="int8")
    fp32 = model.save(tmp_path / "fp32.pt", text_encoder_dtype="float32")
    loaded = FusionClassifier.from_checkpoint(int8, device="cpu")
    assert loaded.checkpoint_meta["text_encoder_dtype"] == "int8"
    layer = "text_encoder.encoder.layer.1.attention.self.query.weight"
    assert torch.load(int8, weights_only=True)["state_dict"][layer].dtype == torch.int8
    assert int8.stat().st_size < fp32.stat().st_size
    enc = model.tokenize(["S1: honestly i am furious right now"])
    with torch.no_grad():
        a = model.text_logits(model.pool_text(enc["input_ids"], enc["attention_mask"]))
        b = loaded.text_logits(loaded.pool_text(enc["input_ids"], enc["attention_mask"]))
    assert torch.allclose(a, b, atol=1e-2)  # the round trip made the evaluated model the stored one


def test_lower_cache_pads_rows_and_masks_the_padding(tiny: Path) -> None:
    model = _model(tiny)
    cache = LowerCache.build(model.text_encoder, model.tokenize, ["a", "honestly i am furious right now"], 1,
                             torch.device("cpu"))  # fmt: skip
    states, mask = cache.batch([1, 0], torch.device("cpu"))
    assert states.shape[:2] == mask.shape and mask[0].all() and int(mask[1].sum()) < mask.shape[1]
    assert float(states[1, int(mask[1].sum()) :].abs().sum()) == 0.0


def test_text_refuses_an_audio_source_without_an_audio_branch_before_training(tiny: Path, tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture[str],
                                                                              ) -> None:  # fmt: skip
    from training.cli import main

    text_only = _model(tiny).save(tmp_path / "text-only.pt")
    run_dir = tmp_path / "run"
    status = main(["text", "--audio-from", str(text_only), "--run-dir", str(run_dir), "--text-encoder", str(tiny)])
    assert status == 2
    assert "has no audio branch to carry over" in capsys.readouterr().err
    assert not run_dir.exists()  # refused before any data was read or any epoch was run


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--distill-from", "missing.pt"], "--distill-from missing.pt does not exist"),
        (["--distill-from", "TEACHER", "missing.pt"], "--distill-from missing.pt does not exist"),
        (["--distill-from", "TEACHER", "--distill-weight", "0"], "--distill-weight must lie in (0, 1]"),
        (["--distill-from", "TEACHER", "--distill-temperature", "-1"], "--distill-temperature be > 0"),
        (["--distill-from", "TEACHER", "--init-from", "TEACHER"], "give one of them"),
    ],
)
def test_text_refuses_a_bad_distillation_before_training(tiny: Path, tmp_path: Path, flags: list[str], message: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from training.cli import main

    teacher = _model(tiny).save(tmp_path / "teacher.pt")
    run_dir = tmp_path / "run"
    argv = ["text", "--run-dir", str(run_dir), "--text-encoder", str(tiny)]
    status = main(argv + [str(teacher) if f == "TEACHER" else f for f in flags])
    assert status == 2
    assert message in capsys.readouterr().err
    assert not run_dir.exists()
