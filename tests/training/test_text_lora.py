"""LoRA adapters over the text encoder: only they train, and merged they are the same function as a
plain encoder, which the checkpoint stores and the service runs unchanged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.training.test_text_branch import _keyword_rows, _model
from tests.training.tiny_encoder import make_tiny_encoder
from training.checkpoint import CheckpointError, round_trip_text
from training.model import FusionClassifier
from training.text_branch import TextBranchOptions, train_text_branch
from training.text_lora import add_lora, merge_lora


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny") / "encoder")


def _pooled(model: FusionClassifier, text: str) -> torch.Tensor:
    enc = model.tokenize([text])
    with torch.no_grad():
        return model.pool_text(enc["input_ids"], enc["attention_mask"])


def test_only_the_adapters_of_the_upper_layers_train(encoder: Path) -> None:
    model = _model(encoder)
    before = _pooled(model.eval(), "S1: honestly i am furious right now")
    n = add_lora(model.text_encoder, first_layer=1, rank=4)
    trainable = [name for name, p in model.text_encoder.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name and ".layer.1." in name for name in trainable)
    assert n == sum(p.numel() for p in model.text_encoder.parameters() if p.requires_grad)
    # B starts at zero: the adapted encoder is the plain one until it trains
    torch.testing.assert_close(_pooled(model.eval(), "S1: honestly i am furious right now"), before)
    with pytest.raises(ValueError, match="rank"):
        add_lora(_model(encoder).text_encoder, first_layer=0, rank=0)
    with pytest.raises(ValueError, match="no Linear"):
        add_lora(_model(encoder).text_encoder, first_layer=5, rank=2)


def test_trained_adapters_merge_into_plain_layers_that_save_and_load(encoder: Path, tmp_path: Path) -> None:
    model = _model(encoder)
    add_lora(model.text_encoder, first_layer=0, rank=4)
    train, dev = _keyword_rows(60, 0, "train"), _keyword_rows(18, 1, "dev")
    opts = TextBranchOptions(epochs=20, batch_size=8, lr_encoder=3e-3, lr_head=3e-2, seed=0)
    result = train_text_branch(model, train, dev, opts, torch.device("cpu"))
    assert result.best_dev_weighted_f1 >= 0.9  # chance is about 1/3
    text = "S2: honestly i am terrified right now"
    adapted = _pooled(model, text)
    assert merge_lora(model.text_encoder) == 2 * 6  # q, k, v, attention out, intermediate, out per layer
    assert not any("lora_" in name for name, _ in model.text_encoder.named_parameters())
    assert all(type(m) is nn.Linear for n, m in model.text_encoder.named_modules() if n.endswith(".query"))
    merged = _pooled(model, text)
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-5)
    plain = _pooled(_model(encoder).eval(), text)
    assert not torch.allclose(merged, plain, atol=1e-3)  # the layers did change
    loaded = FusionClassifier.from_checkpoint(model.save(tmp_path / "m.pt", text_encoder_dtype="float32"), "cpu")
    torch.testing.assert_close(_pooled(loaded, text), merged, atol=1e-5, rtol=1e-5)

    # lowrank: only the adapters' change is stored, as float16 factors, and added to the packaged layers on load
    path = model.save(tmp_path / "low.pt", text_encoder_dtype="lowrank", text_delta_rank=4)
    stored = torch.load(path, weights_only=True)["state_dict"]
    matrices = [k for k, v in stored.items() if k.startswith("text_encoder.") and v.ndim == 2]
    assert len(matrices) == 2 * 2 * 6 and all(k.endswith((".lowrank_u", ".lowrank_v")) for k in matrices)
    assert all(4 in stored[k].shape and stored[k].dtype == torch.float16 for k in matrices)
    loaded = FusionClassifier.from_checkpoint(path, "cpu")
    assert loaded.checkpoint_meta["text_delta_rank"] == 4
    torch.testing.assert_close(_pooled(loaded, text), merged, atol=2e-3, rtol=2e-3)
    round_trip_text(model, "lowrank", 4)  # what training evaluates before saving is what the load gives
    torch.testing.assert_close(_pooled(model, text), _pooled(loaded, text), atol=1e-5, rtol=1e-5)
    # ... to the bit: a round-tripped (or loaded) model is stored with the factors it was rounded to, not
    # factorised anew (which would round them to float16 a second time)
    again = FusionClassifier.from_checkpoint(model.save(tmp_path / "again.pt", text_encoder_dtype="lowrank",
                                                        text_delta_rank=4), "cpu")  # fmt: skip
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())
    resaved = torch.load(again.save(tmp_path / "resaved.pt", text_encoder_dtype="lowrank", text_delta_rank=4),
                         weights_only=True)["state_dict"]  # fmt: skip
    stored_again = torch.load(tmp_path / "again.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(resaved[k], stored_again[k]) for k in matrices)


def test_a_lowrank_checkpoint_needs_its_rank_and_a_base_that_has_its_layers(encoder: Path, tmp_path: Path) -> None:
    model = _model(encoder)
    with pytest.raises(ValueError, match="rank >= 1"):
        model.save(tmp_path / "m.pt", text_encoder_dtype="lowrank")
    path = model.save(tmp_path / "m.pt", text_encoder_dtype="lowrank", text_delta_rank=2)
    blob = torch.load(path, weights_only=True)
    key = next(k for k in blob["state_dict"] if k.endswith(".lowrank_u"))
    blob["state_dict"][key.replace(".layer.", ".nolayer.")] = blob["state_dict"].pop(key)
    torch.save(blob, path)
    with pytest.raises(CheckpointError, match="nolayer.* is stored as a change from the packaged encoder"):
        FusionClassifier.from_checkpoint(path, "cpu")


def test_without_peft_lora_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """peft is the optional extra ``emostream[lora]``: the service install does without it."""
    monkeypatch.setitem(sys.modules, "peft", None)  # what a lean install looks like to an import
    with pytest.raises(ImportError, match=r"pip install 'emostream\[lora\]'"):
        add_lora(nn.Sequential(nn.Linear(2, 2)), 0, 4)


def test_lora_rank_without_peft_stops_at_the_argument_check(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--lora-rank`` on a lean install fails before any data is read or layer cached, naming the extra."""
    from training.cli import main

    monkeypatch.setitem(sys.modules, "peft", None)
    assert main(["text", "--lora-rank", "4", "--data-dir", str(tmp_path / "none"), "--run-dir", str(tmp_path)]) == 2
    assert "pip install 'emostream[lora]'" in capsys.readouterr().err


def test_lowrank_storage_without_lora_stops_at_the_argument_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.cli import main

    args = ["text", "--text-encoder-dtype", "lowrank", "--data-dir", str(tmp_path / "none"), "--run-dir", str(tmp_path)]
    assert main(args) == 2
    assert "lowrank stores the adapters' change: it needs --lora-rank" in capsys.readouterr().err


def test_a_stage_2_run_on_a_lowrank_checkpoint_stores_it_at_its_rank(encoder: Path, tmp_path: Path) -> None:
    """``--init-from`` skips stage 1, so there is no ``--lora-rank``: the rank is the checkpoint's own."""
    import argparse

    from training.text_cli import _storage

    args = argparse.Namespace(text_encoder_dtype="lowrank", lora_rank=0, init_from="C")
    lowrank = FusionClassifier.from_checkpoint(
        _model(encoder).save(tmp_path / "low.pt", text_encoder_dtype="lowrank", text_delta_rank=2), "cpu"
    )
    assert _storage(args, lowrank) == {"text_encoder_dtype": "lowrank", "text_delta_rank": 2}
    plain = FusionClassifier.from_checkpoint(_model(encoder).save(tmp_path / "f16.pt", text_encoder_dtype="float16"))
    with pytest.raises(ValueError, match="C was not stored lowrank"):
        _storage(args, plain)
