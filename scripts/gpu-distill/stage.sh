# GPU side, step 1 (the first call): the first half of the weights and the scripts to /tmp/kdw, which lasts
# while the machine stays warm (30 s after a call). Run from the folder holding pack.py's wa.pt, base.pt,
# data.pt and these scripts.
mkdir -p /tmp/kdw && cp wa.pt base.pt data.pt kd.py ens.py /tmp/kdw/ || exit 1
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name(0))"
