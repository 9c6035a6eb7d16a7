"""``FusionClassifier``: text branch + audio branch, concatenated, MLP head over the MELD labels.

* Text branch: a transformers encoder (default the packaged all-MiniLM-L6-v2), mean-pooled over
  real tokens; only its top ``text_trainable_layers`` layers are trained.
* Audio branch: the feature vector of :mod:`training.features`, standardised with statistics from
  the training set, then an MLP (or, for ``logmel-cnn``, a small CNN over the log-mel patch).
* A missing branch (no transcript, no audio, or a mode without that branch) is replaced by a
  learned "missing" embedding, so the head always sees ``[text, audio]``. Modality dropout during
  training (see ``training.train``) teaches the head to work with either branch alone.
* ``fusion = "learned"``: rows with both branches go through the head on ``[text, audio]``; right
  when training had paired rows (MELD.Raw: text and audio of the same utterance).
  ``fusion = "pool"``: when the branches were trained on different corpora (MELD text, acted-speech
  audio) the head never saw both at once, so its output for such a row would be arbitrary. Such
  rows instead mix the two single-branch predictions, ``(1 - w) p_text + w p_audio`` with
  ``w = audio_weight``; a linear pool keeps a confident branch from being vetoed by an
  overconfident one on audio unlike its training corpora.

Checkpoints (:mod:`training.checkpoint`) are self-describing and store only what training changed: the
frozen layers of the packaged text encoder are reloaded from the packaged weights, whose sha256 is checked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from training.checkpoint import load_checkpoint, read_checkpoint, write_checkpoint
from training.device import resolve_text_dtype
from training.features import LOGMEL_BANDS, LOGMEL_FRAMES, FeatureConfig
from training.model_config import ModelConfig
from training.quantize import quantize_int8
from training.text_split import upper_states
from training.weights import ModelError, ResolvedModel, resolve_text_encoder, sha256_file

if TYPE_CHECKING:
    from training.context import PastContext

__all__ = ["FusionClassifier"]

logger = logging.getLogger(__name__)

TEXT_HEAD_DROPOUT = 0.1


def _encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer block list of a transformers encoder (BERT, RoBERTa, MPNet, DistilBERT...)."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None) or getattr(
        getattr(model, "config", None), "n_layers", None
    )
    best: nn.ModuleList | None = None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and (n is None or len(module) == n):
            best = module
            break
    if best is None:
        raise ModelError(f"cannot find the layer list of {type(model).__name__}")
    return best


def _mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def _text_sha256(resolved: ResolvedModel) -> str:
    if resolved.provenance.get("sha256"):
        return resolved.provenance["sha256"]
    folder = Path(resolved.path)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return sha256_file(folder / name)
    return ""  # a hub name: identified by name only


class _AudioCNN(nn.Module):
    """Log-mel patch (+ prosody tail) -> vector, trained from scratch."""

    def __init__(self, audio_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.mel_size = LOGMEL_BANDS * LOGMEL_FRAMES
        self.tail = audio_dim - self.mel_size
        if self.tail < 0:
            raise ValueError(f"logmel-cnn needs audio_dim >= {self.mel_size}, got {audio_dim}")
        self.conv = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.GELU(), nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(64 + self.tail, hidden), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mel = x[:, : self.mel_size].reshape(-1, 1, LOGMEL_BANDS, LOGMEL_FRAMES)
        pooled = self.conv(mel).flatten(1)
        return self.out(torch.cat([pooled, x[:, self.mel_size :]], dim=1))


class FusionClassifier(nn.Module):
    """Late-fusion classifier; see the module docstring. ``forward`` returns logits ``(B, n_labels)``."""

    audio_mean: torch.Tensor
    audio_std: torch.Tensor

    def __init__(
        self,
        config: ModelConfig,
        feature_config: FeatureConfig | None = None,
        *,
        text_model: ResolvedModel | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.feature_config = feature_config if config.uses_audio else None
        if config.uses_audio and feature_config is None:
            raise ValueError("a model with an audio branch needs its feature_config")
        hidden = config.hidden_dim
        self.text_model: ResolvedModel | None = None
        self.text_sha256 = ""
        self._trainable_text_prefixes: tuple[str, ...] = ()
        if config.uses_text:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # "Loading weights" bars on every checkpoint load

            resolved = text_model or resolve_text_encoder(config.text_encoder)
            self.text_model = resolved
            self.text_sha256 = _text_sha256(resolved)
            self.tokenizer = AutoTokenizer.from_pretrained(resolved.path)
            self.text_encoder = AutoModel.from_pretrained(resolved.path)
            self._freeze_text(config.text_trainable_layers)
            width = int(self.text_encoder.config.hidden_size)
            self.text_proj = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(width, hidden), nn.GELU())
            if config.text_head == "linear":
                self.text_head = nn.Sequential(nn.Dropout(TEXT_HEAD_DROPOUT), nn.Linear(width, len(config.labels)))
            if config.context:
                from training.context import ContextConfig, ContextModule

                self.context = ContextModule(ContextConfig.from_dict(config.context), width, len(config.labels))
        if config.uses_audio:
            self.register_buffer("audio_mean", torch.zeros(config.audio_dim))
            self.register_buffer("audio_std", torch.ones(config.audio_dim))
            if config.audio_kind == "logmel-cnn":
                self.audio_net: nn.Module = _AudioCNN(config.audio_dim, hidden, config.dropout)
            else:
                self.audio_net = nn.Sequential(
                    nn.Dropout(0.1),
                    nn.Linear(config.audio_dim, hidden), nn.GELU(), nn.Dropout(config.dropout),
                    nn.Linear(hidden, hidden), nn.GELU(),
                )  # fmt: skip
        self.text_missing = nn.Parameter(torch.zeros(hidden))
        self.audio_missing = nn.Parameter(torch.zeros(hidden))
        self.head = nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Dropout(config.dropout),
            nn.Linear(hidden, len(config.labels)),
        )  # fmt: skip

    # ------------------------------------------------------------------ text
    def _freeze_text(self, trainable_layers: int) -> None:
        for p in self.text_encoder.parameters():
            p.requires_grad_(False)
        layers = _encoder_layers(self.text_encoder)
        k = min(trainable_layers, len(layers))
        names = {id(m): n for n, m in self.text_encoder.named_modules()}
        prefixes = [f"text_encoder.{names[id(layer)]}." for layer in list(layers)[len(layers) - k :]]
        if trainable_layers > len(layers):  # "all": embeddings too
            for p in self.text_encoder.parameters():
                p.requires_grad_(True)
            prefixes = ["text_encoder."]
        for layer in list(layers)[len(layers) - k :]:
            for p in layer.parameters():
                p.requires_grad_(True)
        self._trainable_text_prefixes = tuple(prefixes)

    def tokenize(self, texts: list[str], device: torch.device | str = "cpu", pasts: Sequence[str] | None = None,
                 ) -> dict[str, torch.Tensor]:  # fmt: skip
        """``input_ids`` and ``attention_mask`` of the (tagged) ``texts``. With ``pasts`` (one string per
        line, its previous lines tagged and joined, "" for none; :func:`training.text_branch.past_segment`)
        each line is encoded as a pair, the line first and its past second, the past cut from its oldest
        end to ``max_pair_tokens``; ``pool_mask`` then marks the line's own tokens (with its specials), and
        ``token_type_ids`` come too where the encoder has segment ids (BERT)."""
        if pasts is None:
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.config.max_text_tokens,
                                 return_tensors="pt")  # fmt: skip
            return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}
        return {k: v.to(device) for k, v in self._tokenize_pairs(texts, pasts).items()}

    def _tokenize_pairs(self, texts: Sequence[str], pasts: Sequence[str]) -> dict[str, torch.Tensor]:
        if len(pasts) != len(texts):
            raise ValueError(f"{len(texts)} lines but {len(pasts)} pasts")
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError("past lines in the encoder's input need a fast (Rust) tokenizer")
        limit, budget = self.config.max_text_tokens, self.config.max_pair_tokens
        rows: list[tuple[list[int], list[int], int]] = []
        for text, past in zip(texts, pasts, strict=True):
            alone = self.tokenizer(text, truncation=True, max_length=limit)
            ids, types, own = list(alone["input_ids"]), list(alone.get("token_type_ids") or []), len(alone["input_ids"])
            if past and own < limit:  # a line cut to max_text_tokens is read alone
                enc = self.tokenizer(text, past)
                seq = enc.sequence_ids()
                drop = set()
                excess = len(seq) - budget
                for i, s in enumerate(seq):  # the oldest past tokens go first
                    if excess <= 0:
                        break
                    if s == 1:
                        drop.add(i)
                        excess -= 1
                ids = [t for i, t in enumerate(enc["input_ids"]) if i not in drop]
                types = [t for i, t in enumerate(enc.get("token_type_ids") or []) if i not in drop]
            rows.append((ids, types, own))
        width = max(len(ids) for ids, _, _ in rows)
        pad = int(self.tokenizer.pad_token_id or 0)
        out = {"input_ids": torch.full((len(rows), width), pad, dtype=torch.long),
               "attention_mask": torch.zeros(len(rows), width, dtype=torch.long),
               "pool_mask": torch.zeros(len(rows), width, dtype=torch.long)}  # fmt: skip
        with_types = all(types for _, types, _ in rows)
        if with_types:
            out["token_type_ids"] = torch.zeros(len(rows), width, dtype=torch.long)
        for r, (ids, types, own) in enumerate(rows):
            out["input_ids"][r, : len(ids)] = torch.tensor(ids)
            out["attention_mask"][r, : len(ids)] = 1
            out["pool_mask"][r, :own] = 1
            if with_types:
                out["token_type_ids"][r, : len(types)] = torch.tensor(types)
        return out

    def pool_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor | None = None,
                  token_type_ids: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """The encoder's mean-pooled output over real tokens, ``(B, width)``; over ``pool_mask``'s tokens
        when given (a line read with its past: the line's own tokens, :meth:`tokenize`)."""
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        states = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        # float32 from here on, whatever the encoder's dtype
        return _mean_pool(states.float(), attention_mask if pool_mask is None else pool_mask)

    @property
    def text_encoder_params(self) -> int:
        """How many parameters the text encoder has (0 without text): ``text_dtype = "auto"`` reads it."""
        return sum(p.numel() for p in self.text_encoder.parameters()) if self.config.uses_text else 0

    def run_text_as(self, spec: str) -> torch.dtype:
        """Resolve ``[classifier] text_dtype`` ``spec`` for this model (its device, its encoder's size:
        :func:`training.device.resolve_text_dtype`), run the text encoder in it, and return it."""
        device = next(self.parameters()).device
        dtype = resolve_text_dtype(spec, device, encoder_params=self.text_encoder_params)
        self.run_text_in(dtype)
        return dtype

    def run_text_in(self, dtype: torch.dtype) -> None:
        """Run the text encoder in ``dtype`` (e.g. bfloat16, ``[classifier] text_dtype``; ``torch.qint8``:
        dynamic int8 Linear layers, :mod:`training.quantize`, for inference only); :meth:`pool_text` still
        returns float32, so the context module and the heads are unchanged. No-op without text."""
        if not self.config.uses_text or dtype == torch.float32:
            return
        if dtype == torch.qint8:
            quantize_int8(self.text_encoder)
        else:
            self.text_encoder.to(dtype)

    @property
    def frozen_text_layers(self) -> int:
        """How many of the encoder's lower layers training leaves frozen (their output can be cached)."""
        n = len(_encoder_layers(self.text_encoder))
        return n - min(self.config.text_trainable_layers, n)

    def pool_upper(self, lower: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """:meth:`pool_text` from the cached output of the frozen layers (:mod:`training.text_split`)."""
        states = upper_states(self.text_encoder, lower, attention_mask, self.frozen_text_layers)
        return _mean_pool(states, attention_mask)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text_proj(self.pool_text(input_ids, attention_mask))

    def text_logits(self, pooled: torch.Tensor, past: PastContext | None = None) -> torch.Tensor:
        """Text-only logits from the pooled encoder output; with ``past`` (and a context module) the
        context module reads the pooled embeddings of the previous utterances too."""
        if past is not None and hasattr(self, "context"):
            return self.context(pooled, past, self._text_only)
        return self._text_only(pooled)

    def _text_only(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.config.text_head == "linear":
            return self.text_head(pooled)
        hidden = self.config.hidden_dim
        text_vec = self.text_proj(pooled)
        return self.head(torch.cat([text_vec, self.audio_missing.expand(*text_vec.shape[:-1], hidden)], dim=-1))

    # ------------------------------------------------------------------ audio
    def set_audio_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise audio features with training-set statistics (stored in the checkpoint)."""
        self.audio_mean.copy_(mean.to(self.audio_mean))
        self.audio_std.copy_(std.to(self.audio_std).clamp(min=1e-4))

    def encode_audio(self, features: torch.Tensor) -> torch.Tensor:
        return self.audio_net((features - self.audio_mean) / self.audio_std)

    # ------------------------------------------------------------------ forward
    def forward(  # noqa: PLR0913 (pool_mask, token_type_ids: what tokenize() adds for a line read with its past)
        self,
        *,
        batch_size: int,
        text_rows: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        audio_rows: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
        text_pooled: torch.Tensor | None = None,
        past: PastContext | None = None,
        pool_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits for ``batch_size`` rows.

        ``text_rows``: indices of the rows that have text, with ``input_ids``/``attention_mask`` for
        exactly those rows (or their already pooled encoder output ``text_pooled``); ``audio_rows``
        likewise with ``audio_features``. Other rows use the learned "missing" embedding for that
        branch. ``past``: the previous utterances of the text rows (``text_head = "linear"`` only).
        ``pool_mask``/``token_type_ids``: from :meth:`tokenize` when the lines were read with their past lines.
        """
        if self.config.text_head == "linear" or hasattr(self, "context"):
            return self._forward_branches(
                batch_size, text_rows=text_rows, input_ids=input_ids, attention_mask=attention_mask,
                audio_rows=audio_rows, audio_features=audio_features, text_pooled=text_pooled, past=past,
                pool_mask=pool_mask, token_type_ids=token_type_ids,
            )  # fmt: skip
        hidden = self.config.hidden_dim
        text_vec = self.text_missing.expand(batch_size, hidden)
        audio_vec = self.audio_missing.expand(batch_size, hidden)
        if text_rows is not None and text_rows.numel():
            if not self.config.uses_text:
                raise ValueError("this model has no text branch")
            assert input_ids is not None and attention_mask is not None
            enc = self.encode_text(input_ids, attention_mask).to(text_vec.dtype)
            text_vec = text_vec.index_put((text_rows,), enc)
        if audio_rows is not None and audio_rows.numel():
            if not self.config.uses_audio:
                raise ValueError("this model has no audio branch")
            assert audio_features is not None
            enc = self.encode_audio(audio_features.float()).to(audio_vec.dtype)
            audio_vec = audio_vec.index_put((audio_rows,), enc)
        logits = self.head(torch.cat([text_vec, audio_vec], dim=1))
        if self.config.fusion == "pool" and text_rows is not None and audio_rows is not None:
            both = torch.zeros(batch_size, dtype=torch.bool, device=logits.device)
            both[text_rows] = True
            seen_audio = torch.zeros_like(both)
            seen_audio[audio_rows] = True
            both &= seen_audio
            if bool(both.any()):
                n = int(both.sum())
                text_only = self.head(torch.cat([text_vec[both], self.audio_missing.expand(n, hidden)], dim=1))
                audio_only = self.head(torch.cat([self.text_missing.expand(n, hidden), audio_vec[both]], dim=1))
                w = self.config.audio_weight
                mixed = (1.0 - w) * text_only.float().softmax(-1) + w * audio_only.float().softmax(-1)
                # Log-probabilities are valid logits: softmax gives the mixture back.
                logits = logits.index_put((both.nonzero().squeeze(1),), mixed.clamp_min(1e-12).log().to(logits.dtype))
        return logits

    def _forward_branches(  # noqa: PLR0913 (forward's arguments)
        self,
        batch_size: int,
        *,
        text_rows: torch.Tensor | None,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        audio_rows: torch.Tensor | None,
        audio_features: torch.Tensor | None,
        text_pooled: torch.Tensor | None,
        past: PastContext | None,
        pool_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Branch by branch (a linear text head, or a context module): text rows get the text-only
        logits (:meth:`text_logits`, reading ``past`` when given); audio-only rows the shared head over
        ``[missing text, audio]``; rows with both mix the two ("pool") or go through the shared head
        over ``[text_proj(pooled), audio]`` ("learned"). Without ``past`` this equals the joint
        forward for an ``mlp`` text head."""
        hidden, n_labels = self.config.hidden_dim, len(self.config.labels)
        logits = torch.zeros(batch_size, n_labels, device=self.text_missing.device)
        has_text = text_rows is not None and text_rows.numel() > 0
        has_audio = audio_rows is not None and audio_rows.numel() > 0
        pooled = text_pooled
        if has_text:
            if not self.config.uses_text:
                raise ValueError("this model has no text branch")
            if pooled is None:
                assert input_ids is not None and attention_mask is not None
                pooled = self.pool_text(input_ids, attention_mask, pool_mask, token_type_ids)
            assert text_rows is not None
            logits = logits.index_put((text_rows,), self.text_logits(pooled, past).to(logits.dtype))
        if has_audio:
            if not self.config.uses_audio:
                raise ValueError("this model has no audio branch")
            assert audio_features is not None and audio_rows is not None
            audio_vec = self.encode_audio(audio_features.float())
            n = audio_vec.shape[0]
            text_of_audio = self.text_missing.expand(n, hidden)
            both = torch.zeros(0, dtype=torch.long, device=logits.device)
            if has_text:
                assert text_rows is not None and pooled is not None
                pos = torch.full((batch_size,), -1, dtype=torch.long, device=logits.device)
                pos[text_rows] = torch.arange(text_rows.numel(), device=logits.device)
                both = pos[audio_rows]
            audio_only = self.head(torch.cat([text_of_audio, audio_vec], dim=1))
            out = audio_only
            paired = both >= 0
            if bool(paired.any()):
                assert pooled is not None
                if self.config.fusion == "pool":
                    w = self.config.audio_weight
                    p_text = logits[audio_rows[paired]].float().softmax(-1)
                    mixed = (1.0 - w) * p_text + w * audio_only[paired].float().softmax(-1)
                    fused = mixed.clamp_min(1e-12).log()
                else:
                    fused = self.head(torch.cat([self.text_proj(pooled[both[paired]]), audio_vec[paired]], dim=1))
                out = out.index_put((paired.nonzero().squeeze(1),), fused.to(out.dtype))
            logits = logits.index_put((audio_rows,), out.to(logits.dtype))
        return logits

    # ------------------------------------------------------------------ checkpoints
    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything except the frozen text-encoder weights (those come from the packaged model)."""
        out = {}
        for key, value in self.state_dict().items():
            if key.startswith("text_encoder.") and not key.startswith(self._trainable_text_prefixes):
                continue
            out[key] = value.detach().cpu().clone()
        return out

    def base_models(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        if self.text_model is not None:
            out["text"] = {
                "name": self.text_model.name,
                "model_id": self.text_model.model_id,
                "sha256": self.text_sha256,
                **{k: v for k, v in self.text_model.provenance.items() if k != "sha256"},
            }
        return out

    # Checkpoint I/O lives in training.checkpoint; these are its entry points on the model.
    save = write_checkpoint  # model.save(path, *, metrics, trained_on, audio_model, extra, text_encoder_dtype)
    read_checkpoint = staticmethod(read_checkpoint)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> FusionClassifier:
        """Rebuild the model from the checkpoint alone (plus the packaged base models), in eval mode."""
        return load_checkpoint(cls, path, device)

    checkpoint_meta: dict[str, Any] = {}  # noqa: RUF012 - set per instance by from_checkpoint
    # The lowrank factors the text layers were last read from or rounded to (training.checkpoint), so that
    # saving again stores those same factors instead of factorising anew. Set per instance.
    lowrank_factors: dict[str, torch.Tensor] = {}  # noqa: RUF012
