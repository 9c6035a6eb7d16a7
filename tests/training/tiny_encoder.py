"""A tiny random BERT with a word-level vocabulary, saved as a local model folder: the text-branch
training path runs on it in seconds (no packaged weights needed)."""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "s1", "s2", "s3", "s", "?", ":", "yes", "no", "ok", "sure", "well", "so", "i", "am", "you", "are", "it", "is",
    "the", "a", "what", "really", "right", "now", "honestly", "furious", "angry", "delighted", "happy",
    "terrified", "scared", "sad", "gross", "wow", "calm", "fine", "great", "terrible",
)  # fmt: skip


def make_tiny_encoder(folder: Path) -> Path:
    """Write the model + tokenizer into ``folder`` (if not there yet) and return it."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, initializer_range=0.2,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
    BertModel(cfg).save_pretrained(folder)
    return folder
