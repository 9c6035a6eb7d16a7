"""GPU side, between and after kd.py's phases.

    ens.py teachers    the teachers' mean logits on train (the students' targets); dev/test figures of each
                       teacher, of their ensemble (mean logits) and of their soup (mean merged change + mean
                       head in one model: every run starts from one head init for this)
    ens.py final OUT   summary.json of every run, logits.pt (dev/test logits of every run), and the adapters
                       of the best-dev teacher and the two best-dev students (for readback.py) into OUT"""
import sys, os, json, time
from pathlib import Path
import numpy as np, torch, torch.nn as nn
sys.path.insert(0, str(Path(__file__).resolve().parent))
import kd

RES = kd.RES


def runs(role):
    return sorted((torch.load(p, weights_only=False) for p in RES.glob(f"{role}_*.pt")), key=lambda r: r["seed"])


def scores(lg, data):
    out = {}
    for split in ("dev", "test"):
        y = np.array(data.d[split]["labels"])
        for form in ("known", "unk"):
            l = lg[f"{split}_{form}"]
            out[f"{split}_{form}"] = round(kd.wf1(y[:len(l)], l.argmax(1).numpy()), 4)
    return out


def teachers():
    data = kd.Data()
    ts = runs("teacher")
    n = len(data.d["train"]["labels"])
    ens = torch.zeros(2 * n, 7)
    for r in ts:
        k, u = r["logits"]["train_known"], r["logits"]["train_unk"]
        ens[: len(k)] += k / len(ts); ens[n: n + len(u)] += u / len(ts)
    torch.save(ens, RES / "ensemble_train.pt")
    summ = {"teachers": [{"seed": r["seed"], "best_epoch": r["best_epoch"], "hist": r["hist"], **scores(r["logits"], data)}
                         for r in ts]}
    mean_lg = {k: sum(r["logits"][k] for r in ts) / len(ts) for k in ts[0]["logits"] if not k.startswith("train")}
    summ["ensemble"] = scores(mean_lg, data)
    # soup: mean merged change + mean head, in one plain model
    t0 = time.time()
    model = kd.load_base()
    deltas = {}
    for r in ts:
        for name, (A, B) in r["adapters"].items():
            deltas[name] = deltas.get(name, 0) + (B @ A) * (kd.ALPHA / kd.RANK) / len(ts)
    kd.set_delta(model, deltas)
    head = nn.Sequential(nn.Dropout(0.1), nn.Linear(768, 7))
    head.load_state_dict({k: sum(r["head"][k] for r in ts) / len(ts) for k in ts[0]["head"]})
    model.to(kd.DEV); head.to(kd.DEV)
    nd = 64 if kd.SMALL else None
    lg = {f"{s}_{f}": kd.logits_of(model, head, data, s, f, nd) for s in ("dev", "test") for f in ("known", "unk")}
    summ["soup"] = scores(lg, data)
    torch.save({"deltas_rank_note": "dense mean", "head": head.state_dict(), "logits": lg}, RES / "soup.pt")
    print(json.dumps(summ), flush=True)
    (RES / "summary_teachers.json").write_text(json.dumps(summ, indent=1))


def final(out):
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    data = kd.Data()
    summ = json.loads((RES / "summary_teachers.json").read_text()) if (RES / "summary_teachers.json").exists() else {}
    ss = runs("student")
    summ["students"] = [{"seed": r["seed"], "best_epoch": r["best_epoch"], "hist": r["hist"], **scores(r["logits"], data)}
                        for r in ss]
    if ss:
        mean_lg = {k: sum(r["logits"][k] for r in ss) / len(ss) for k in ss[0]["logits"]}
        summ["student_ensemble"] = scores(mean_lg, data)
    (out / "summary.json").write_text(json.dumps(summ, indent=1))
    print(json.dumps(summ, indent=1), flush=True)
    logits = {}
    for role in ("teacher", "student"):
        for r in runs(role):
            for k, v in r["logits"].items():
                if not k.startswith("train"):
                    logits[f"{role}{r['seed']}_{k}"] = v.half()
    soup = RES / "soup.pt"
    if soup.exists():
        for k, v in torch.load(soup, weights_only=False)["logits"].items():
            logits[f"soup_{k}"] = v.half()
    torch.save(logits, out / "logits.pt")
    for role, key in (("student", "students"), ("teacher", "teachers")):
        rs = sorted(runs(role), key=lambda r: -r["dev"])[:2 if role == "student" else 1]
        for r in rs:
            torch.save({"seed": r["seed"], "adapters": r["adapters"],
                        "head": r["head"], "hist": r["hist"]}, out / f"{role}{r['seed']}.pt")


if __name__ == "__main__":
    teachers() if sys.argv[1] == "teachers" else final(sys.argv[2])
