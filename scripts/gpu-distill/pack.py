"""CPU side, step 1: MELD tokenized exactly as the project tokenizes it (speaker tags, 3 past lines as the
second segment, `FusionClassifier._tokenize_pairs`) and MPNet's weights packed small enough to travel to a GPU
machine that reaches nothing (64 MiB per call): word embeddings cut to MELD's 6,195 tokens (float16), the
layers' weight matrices as per-row int8 in two parts (layers 0-5, 6-11), everything else float32.

    .venv/bin/python scripts/gpu-distill/pack.py ../shared/data/meld OUT_DIR
writes OUT_DIR/{data.pt, base.pt, wa.pt, wb.pt}. Pooled encodings through the packed weights match float32 at
cosine 0.998-0.999 (dev lines with their pasts)."""
import sys, types
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from transformers import AutoTokenizer
from training.data import load_meld
from training.model import FusionClassifier
from training.model_config import ModelConfig
from training.data import LABELS
from training.weights import resolve_text_encoder
from training.text_branch import speaker_tags, tagged, dialogue_pasts, UNKNOWN_SPEAKER, conversation_order, dialogue_of

K = 3
meld, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
res = resolve_text_encoder("all-mpnet-base-v2")
tok = AutoTokenizer.from_pretrained(res.path)
cfg = ModelConfig(labels=LABELS, mode="text", text_encoder="all-mpnet-base-v2", text_trainable_layers=12,
                  max_text_tokens=64, text_head="linear", text_past_lines=K)
print("max_text_tokens", cfg.max_text_tokens, "max_pair_tokens", cfg.max_pair_tokens)
ns = types.SimpleNamespace(tokenizer=tok, config=cfg)

def rows_of(texts, pasts):
    ids, own = [], []
    for s in range(0, len(texts), 256):
        enc = FusionClassifier._tokenize_pairs(ns, texts[s:s+256], pasts[s:s+256])
        for r in range(enc["input_ids"].shape[0]):
            n = int(enc["attention_mask"][r].sum()); ids.append(enc["input_ids"][r, :n].tolist())
            own.append(int(enc["pool_mask"][r].sum()))
    return ids, own

data = {}
for split in ("train", "dev", "test"):
    exs = load_meld(meld, split)
    if split != "train":  # conversation order, as encode_split
        exs = [exs[i] for i in conversation_order(exs)]
    tags = speaker_tags(exs)
    known_t = [tagged(str(e.text or ""), t) for e, t in zip(exs, tags)]
    unk_t = [tagged(str(e.text or ""), UNKNOWN_SPEAKER) for e in exs]
    kp, up = dialogue_pasts(exs, K), dialogue_pasts(exs, K, unknown=True)
    ki, ko = rows_of(known_t, kp)
    ui, uo = rows_of(unk_t, up)
    data[split] = {"known_ids": ki, "known_own": ko, "unk_ids": ui, "unk_own": uo,
                   "labels": [e.label for e in exs], "uids": [e.uid for e in exs],
                   "has_text": [bool(e.text and str(e.text).strip()) for e in exs],
                   "chars": [len(str(e.text or "")) + len(p) for e, p in zip(exs, kp)]}
    print(split, len(exs), "max len", max(map(len, ki)), "mean", np.mean([len(x) for x in ki]))
    if split == "train":
        assert cfg.max_pair_tokens == 128

# compact vocabulary (keeps 0..3 in place so pad id 1 stays 1)
used = {0, 1, 2, 3}
for d in data.values():
    for key in ("known_ids", "unk_ids"):
        for r in d[key]:
            used.update(r)
vocab = sorted(used)
remap = {v: i for i, v in enumerate(vocab)}
assert remap[1] == 1
for d in data.values():
    for key in ("known_ids", "unk_ids"):
        rows = d[key]
        flat = np.array([remap[t] for r in rows for t in r], dtype=np.int16)
        offs = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
        d[key] = (torch.from_numpy(flat), torch.from_numpy(offs))
print("vocab", len(vocab))
torch.save({"data": data, "labels": list(LABELS), "vocab": vocab}, out / "data.pt")

from transformers import AutoModel
m = AutoModel.from_pretrained(res.path)
conf = m.config.to_dict()
sd = m.state_dict()
base, wa, wb = {}, {}, {}
for k, v in sd.items():
    if k.startswith("pooler."):
        continue
    if k == "embeddings.word_embeddings.weight":
        base[k] = v[torch.tensor(vocab)].half(); continue
    if k.startswith("encoder.layer.") and k.endswith(".weight") and v.dim() == 2:
        layer = int(k.split(".")[2])
        s = v.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
        q = torch.round(v / s).clamp(-127, 127).to(torch.int8)
        (wa if layer <= 5 else wb)[k] = (q, s.squeeze(1).float())
        continue
    base[k] = v.float()
conf["vocab_size"] = len(vocab)
torch.save({"config": conf, "state": base}, out / "base.pt")
torch.save(wa, out / "wa.pt"); torch.save(wb, out / "wb.pt")
print({f: round((out / f).stat().st_size / 2**20, 1) for f in ("data.pt", "base.pt", "wa.pt", "wb.pt")})
