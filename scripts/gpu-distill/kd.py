"""GPU side: one or more runs of a replica of `emostream-train text --text-encoder all-mpnet-base-v2
--trainable-layers 12 --lora-rank 16 --epochs 3 --lr-encoder 5e-4 --lr-head 1e-3 --past-lines 3` (LoRA rank 16,
alpha 32, dropout 0.1 on all 72 Linear layers; AdamW, weight decay 0.01, one-cycle with 10 % warm-up, batch 32 of
similar lengths, 20 % of lines with the unknown-speaker tag, gradient norm 1, best dev epoch), over the int8
weights of pack.py, in bfloat16 autocast. Needs only torch and transformers (no project code, no data files
beyond pack.py's).

    kd.py teacher SEED...   plain cross-entropy; also writes train logits (both tag forms) for ens.py
    kd.py student SEED...   (1 - w) x cross-entropy + w x KL to the mean teacher logits (KD_W, default 0.5;
                            T = 2), as `--distill-from T1 T2 ...`
Env: KD_WEIGHTS (pack.py's folder), KD_RES (results), KD_DEADLINE (epoch seconds: later seeds are skipped),
KD_SMALL (N: a smoke test on N training rows)."""
import sys, os, math, random, time
from pathlib import Path
import torch, torch.nn as nn, torch.nn.functional as F
import numpy as np

W = Path(os.environ.get("KD_WEIGHTS", "/tmp/kdw"))
RES = Path(os.environ.get("KD_RES", "/tmp/kdres"))
DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SMALL = int(os.environ.get("KD_SMALL", "0"))  # CPU smoke test: few steps, few rows
RANK, ALPHA, LR_ENC, LR_HEAD, EPOCHS, BS, WD, WARM, UNK = 16, 32, 5e-4, 1e-3, 3, 32, 0.01, 0.1, 0.2
DW, T = float(os.environ.get("KD_W", "0.5")), 2.0


def wf1(y, p, n=7):
    y, p = np.asarray(y), np.asarray(p)
    tot = 0.0
    for c in range(n):
        tp = np.sum((p == c) & (y == c)); fp = np.sum((p == c) & (y != c)); fn = np.sum((p != c) & (y == c))
        f = 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
        tot += f * np.sum(y == c)
    return float(tot / len(y))


def load_base():
    from transformers import MPNetConfig, MPNetModel
    b = torch.load(W / "base.pt", weights_only=False)
    conf = MPNetConfig.from_dict(b["config"])
    model = MPNetModel(conf, add_pooling_layer=False)
    state = dict(b["state"])
    for part in ("wa.pt", "wb.pt"):
        for k, (q, s) in torch.load(W / part, weights_only=False).items():
            state[k] = q.float() * s[:, None]
    state["embeddings.word_embeddings.weight"] = state["embeddings.word_embeddings.weight"].float()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if "position_ids" not in m]
    unexpected = [u for u in unexpected if "position_ids" not in u]
    assert not missing and not unexpected, (missing, unexpected)
    return model


class Lora(nn.Module):
    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.A = nn.Parameter(torch.empty(RANK, base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, RANK))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.drop = nn.Dropout(0.1)
        self.s = ALPHA / RANK

    def forward(self, x):
        return self.base(x) + (self.drop(x) @ self.A.t() @ self.B.t()) * self.s


def lora_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith("encoder.layer.")]


def add_lora(model):
    for p in model.parameters():
        p.requires_grad_(False)
    names = lora_names(model)
    for n in names:
        parent, _, child = n.rpartition(".")
        setattr(model.get_submodule(parent), child, Lora(model.get_submodule(n)))
    return names


def adapters(model):
    return {n: (m.A.detach().float().cpu().clone(), m.B.detach().float().cpu().clone())
            for n, m in model.named_modules() if isinstance(m, Lora)}


def set_delta(model, deltas):
    """Soup: plain base weights + given dense deltas (no adapters)."""
    for n, d in deltas.items():
        lin = model.get_submodule(n)
        lin.weight.data += d.to(lin.weight)


class Data:
    def __init__(self):
        blob = torch.load(W / "data.pt", weights_only=False)
        self.d = blob["data"]

    def rows(self, split, form):
        flat, offs = self.d[split][f"{form}_ids"]
        own = self.d[split][f"{form}_own"]
        return flat, offs, own

    def batch(self, split, form, idx):
        return self.mixed(split, [(form, i) for i in idx])

    def mixed(self, split, pairs):
        seqs, owns = [], []
        for form, i in pairs:
            flat, offs, own = self.rows(split, form)
            seqs.append(flat[offs[i]:offs[i + 1]].long()); owns.append(own[i])
        idx = owns
        width = max(len(s) for s in seqs)
        ids = torch.full((len(idx), width), 1, dtype=torch.long)
        att = torch.zeros(len(idx), width, dtype=torch.long); pm = torch.zeros(len(idx), width)
        for r, (s, o) in enumerate(zip(seqs, owns)):
            ids[r, :len(s)] = s; att[r, :len(s)] = 1; pm[r, :o] = 1
        return ids.to(DEV, non_blocking=True), att.to(DEV, non_blocking=True), pm.to(DEV, non_blocking=True)


def pooled(model, ids, att, pm):
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=DEV.type == "cuda"):
        h = model(input_ids=ids, attention_mask=att).last_hidden_state
    h = h.float()
    return (h * pm[..., None]).sum(1) / pm.sum(1, keepdim=True).clamp(min=1)


@torch.no_grad()
def logits_of(model, head, data, split, form, n=None):
    model.eval(); head.eval()
    flat, offs, own = data.rows(split, form)
    N = len(own) if n is None else n
    order = sorted(range(N), key=lambda i: int(offs[i + 1] - offs[i]))
    out = torch.zeros(N, 7)
    for s in range(0, N, 256):
        idx = order[s:s + 256]
        out[idx] = head(pooled(model, *data.batch(split, form, idx))).float().cpu()
    return out


def length_batches(lengths, rng):
    order = list(range(len(lengths))); rng.shuffle(order)
    chunk = BS * 50; out = []
    for s in range(0, len(order), chunk):
        part = sorted(order[s:s + chunk], key=lambda i: lengths[i])
        out += [part[j:j + BS] for j in range(0, len(part), BS)]
    rng.shuffle(out)
    return out


def train_one(data, seed, teacher=None):
    torch.manual_seed(0)
    head = nn.Sequential(nn.Dropout(0.1), nn.Linear(768, 7))  # one head init for every run (soup)
    torch.manual_seed(seed); random.seed(seed)
    model = load_base()
    add_lora(model)
    model.to(DEV); head.to(DEV)
    tr = data.d["train"]
    rows = [i for i, h in enumerate(tr["has_text"]) if h]
    n_train = len(tr["labels"])
    if SMALL:
        rows = rows[:SMALL]
    labels = torch.tensor(tr["labels"])
    lengths = [tr["chars"][i] for i in rows]
    enc = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": enc, "lr": LR_ENC}, {"params": list(head.parameters()), "lr": LR_HEAD}],
                            weight_decay=WD)
    per_epoch = math.ceil(len(rows) / BS); total = per_epoch * EPOCHS; warm = max(1, int(total * WARM))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else
                                              0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / max(1, total - warm)))))
    rng = random.Random(seed)
    dev_y = data.d["dev"]["labels"]
    nd = None if not SMALL else 64
    best = (-1.0, 0, None); hist = []
    t0 = time.time()
    params = enc + list(head.parameters())
    for ep in range(1, EPOCHS + 1):
        model.train(); head.train()
        for b in length_batches(lengths, rng):
            idx = [rows[j] for j in b]
            unk = [rng.random() < UNK for _ in idx]
            logits = head(pooled(model, *data.mixed("train", [("unk" if u else "known", i) for i, u in zip(idx, unk)]))).float()
            y = labels[idx].to(DEV)
            if teacher is None:
                loss = F.cross_entropy(logits, y)
            else:
                trow = torch.tensor([i + n_train * u for i, u in zip(idx, unk)])
                soft = teacher[trow].to(DEV)
                ce = F.cross_entropy(logits, y, reduction="none")
                kl = F.kl_div(F.log_softmax(logits / T, -1), F.log_softmax(soft / T, -1), log_target=True,
                              reduction="none").sum(-1) * T * T
                loss = ((1 - DW) * ce + DW * kl).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            opt.step(); sched.step()
        dl = logits_of(model, head, data, "dev", "known", nd)
        f = wf1(dev_y[:len(dl)], dl.argmax(1).numpy())
        hist.append({"epoch": ep, "dev": round(f, 4), "s": round(time.time() - t0, 1)})
        print(f"seed {seed} {'student' if teacher is not None else 'teacher'} epoch {ep} dev {f:.4f} "
              f"({time.time() - t0:.0f} s)", flush=True)
        if f > best[0]:
            best = (f, ep, (adapters(model), {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}))
    # reload best
    ad, hs = best[2]
    for n, m in model.named_modules():
        if isinstance(m, Lora):
            m.A.data.copy_(ad[n][0]); m.B.data.copy_(ad[n][1])
    head.load_state_dict(hs)
    out = {"seed": seed, "hist": hist, "best_epoch": best[1], "dev": best[0], "adapters": ad, "head": hs,
           "seconds": time.time() - t0}
    lg = {}
    for split in ("dev", "test"):
        for form in ("known", "unk"):
            lg[f"{split}_{form}"] = logits_of(model, head, data, split, form, nd if split == "dev" else (64 if SMALL else None))
    if teacher is None:
        ntr = 64 if SMALL else None
        lg["train_known"] = logits_of(model, head, data, "train", "known", ntr)
        lg["train_unk"] = logits_of(model, head, data, "train", "unk", ntr)
    out["logits"] = lg
    return out


def main():
    role, seeds = sys.argv[1], [int(s) for s in sys.argv[2:]]
    torch.set_num_threads(2)
    RES.mkdir(parents=True, exist_ok=True)
    data = Data()
    teacher = None
    if role == "student":
        teacher = torch.load(RES / "ensemble_train.pt", weights_only=False)
    deadline = float(os.environ.get("KD_DEADLINE", "1e18"))
    for s in seeds:
        if time.time() > deadline:
            print(f"skip seed {s}: past deadline", flush=True); continue
        r = train_one(data, s, teacher)
        torch.save(r, RES / f"{role}_{s}.pt")


if __name__ == "__main__":
    main()
