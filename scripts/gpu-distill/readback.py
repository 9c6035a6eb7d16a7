"""CPU side, step 3: adapters trained on the GPU (kd.py, via ens.py final) -> a project checkpoint: the LoRA
changes merged into the true float32 packaged MPNet (not the int8 copy they were trained over) and stored as
rank-16 changes, as `emostream-train text --past-lines 3 --lora-rank 16 --text-encoder-dtype lowrank` writes
its stage 1. Then `emostream-train text --init-from OUT.pt ...` fits the context module and reports.

    .venv/bin/python scripts/gpu-distill/readback.py ADAPTERS.pt OUT.pt "how it was made"
"""
import sys
from pathlib import Path

import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from training.data import LABELS
from training.model import FusionClassifier
from training.model_config import ModelConfig
from training.text_lora import add_lora, merge_lora
from training.checkpoint import round_trip_text

src, dst = sys.argv[1], Path(sys.argv[2])
note = sys.argv[3] if len(sys.argv) > 3 else ""
blob = torch.load(src, weights_only=False)
cfg = ModelConfig(labels=LABELS, mode="text", text_encoder="all-mpnet-base-v2", text_trainable_layers=12,
                  max_text_tokens=64, text_head="linear", text_past_lines=3)
model = FusionClassifier(cfg)
add_lora(model.text_encoder, 0, 16, None)
state = {}
for name, (A, B) in blob["adapters"].items():
    state[f"{name}.lora_A.default.weight"] = A.float()
    state[f"{name}.lora_B.default.weight"] = B.float()
own = dict(model.text_encoder.named_parameters())
missing = [k for k in state if k not in own]
assert not missing, missing[:3]
n_lora = sum(1 for k in own if "lora_" in k)
assert n_lora == len(state), (n_lora, len(state))
model.text_encoder.load_state_dict(state, strict=False)
model.text_head[1].load_state_dict({k.split(".", 1)[1]: v for k, v in blob["head"].items()})
assert merge_lora(model.text_encoder) == 72
model.eval()
round_trip_text(model, "lowrank", 16)
dst.parent.mkdir(parents=True, exist_ok=True)
model.save(dst, metrics={}, trained_on={"text": "MELD train (9989 lines), speaker-tagged, 3 past lines in the input; " + note},
           extra={"command": note, "stage1": {"hist": blob.get("hist"), "seed": blob.get("seed"), "lora_rank": 16}},
           text_encoder_dtype="lowrank", text_delta_rank=16)
print("wrote", dst, dst.stat().st_size / 1e6, "MB")
