"""Dynamic int8 text encoding (training.quantize): per-token ranges, the swap, the dtype's resolution."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.training.meld_fakes import REPO
from training.device import dtype_name, native_bf16, resolve_text_dtype, x86_int8
from training.quantize import TokenScaledLinear, quantize_int8
from training.settings import ConfigError


def _tokens_with_a_massive_one() -> torch.Tensor:
    """(1, 24, 256) inputs of a few units, and one token ~60x larger: a sentence encoder's first token."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 24, 256, generator=gen)
    x[0, 0] *= 60.0
    return x


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


def test_every_token_is_quantised_in_its_own_range_so_a_massive_one_starves_none() -> None:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(256, 128))
    x = _tokens_with_a_massive_one()
    with torch.inference_mode():
        want = encoder(x)
        assert quantize_int8(encoder) == 1
        assert isinstance(encoder[0], TokenScaledLinear)
        got = encoder(x)
    ordinary = slice(1, None)  # the tokens the one massive token would have starved of levels
    assert got.shape == want.shape and got.dtype == torch.float32
    assert _relative_error(got[0, ordinary], want[0, ordinary]) < 0.02
    assert _relative_error(got[0, :1], want[0, :1]) < 0.02


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_one_shared_range_is_what_per_token_ranges_avoid() -> None:
    """The control: the same layer quantised the plain way loses the ordinary tokens to the outlier."""
    torch.manual_seed(0)
    layer = nn.Linear(256, 128)
    x = _tokens_with_a_massive_one()
    with torch.inference_mode():
        want = layer(x)
        plain = torch.ao.quantization.quantize_dynamic(nn.Sequential(layer), {nn.Linear}, inplace=False)
        per_token = nn.Sequential(nn.Linear(256, 128))
        per_token.load_state_dict(nn.Sequential(layer).state_dict())
        quantize_int8(per_token)
        err_plain = _relative_error(plain(x)[0, 1:], want[0, 1:])
        err_per_token = _relative_error(per_token(x)[0, 1:], want[0, 1:])
    assert err_plain > 5 * err_per_token


def test_a_stack_of_layers_with_biases_keeps_its_shape_and_values() -> None:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(32, 16), nn.GELU(), nn.Linear(16, 8, bias=False))
    x = torch.randn(3, 5, 32) + 2.0  # off-centre inputs: the shift goes back through the row sums
    with torch.inference_mode():
        want = encoder(x)
        assert quantize_int8(encoder) == 2
        got = encoder(x)
    assert got.shape == (3, 5, 8)
    assert _relative_error(got, want) < 0.05


def test_int8_resolves_on_the_cpu_only_and_auto_picks_it_for_a_large_encoder_without_native_bf16() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_text_dtype("int8", cpu) == torch.qint8
    assert dtype_name(torch.qint8) == "int8" and dtype_name(torch.bfloat16) == "bfloat16"
    with pytest.raises(ConfigError, match="CPU only"):
        resolve_text_dtype("int8", cuda)
    mpnet, minilm = 109_000_000, 22_700_000
    native = native_bf16()
    large = torch.bfloat16 if native else (torch.qint8 if x86_int8() else torch.float32)
    assert resolve_text_dtype("auto", cpu, encoder_params=mpnet) == large
    assert resolve_text_dtype("auto", cpu, encoder_params=minilm) == (torch.bfloat16 if native else torch.float32)
    assert resolve_text_dtype("auto", cuda, encoder_params=mpnet) == torch.float32
    assert resolve_text_dtype("float32", cpu, encoder_params=mpnet) == torch.float32


@pytest.mark.slow
def test_the_mpnet_option_in_int8_keeps_the_labels_of_float32() -> None:
    """Real weights: the option int8 is meant for (a 110M encoder on a CPU without bf16)."""
    from training.inference import EmotionPredictor

    path = REPO / "models" / "emostream-mpnet.pt"
    lines = ["I can't believe you did that, get out!", "Oh wow, that's wonderful, thank you!",
             "I miss her so much.", "Okay, see you tomorrow then."]  # fmt: skip
    full = EmotionPredictor.from_checkpoint(path, device="cpu", text_dtype="float32")
    small = EmotionPredictor.from_checkpoint(path, device="cpu", text_dtype="int8")
    assert small.model_ids["text_encoder"].endswith("(int8)")
    assert not any(isinstance(m, nn.Linear) for m in small.model.text_encoder.modules())
    a, b = full.predict(lines, [None] * 4), small.predict(lines, [None] * 4)
    assert [p.label for p in a] == [p.label for p in b]
    for p, q in zip(a, b, strict=True):
        assert max(abs(p.scores[k] - q.scores[k]) for k in p.scores) < 0.1
