# GPU side, step 2: 8 teachers, their ensemble and soup, then 8 students distilled from the ensemble, each
# set of 8 in parallel processes on the one GPU (a run is launch-bound: 8 at once take ~125 s, one ~95 s).
# The weights travel in two calls (64 MiB each): the first copies pack.py's wa.pt, base.pt, data.pt and
# these scripts to /tmp/kdw, this one wb.pt; run from the folder holding wb.pt and the scripts:
#   TDL=20 TPH=260 SDL=20 SPH=220 bash run.sh     (TDL/SDL: seconds after which a second seed per process is
#   not started; TPH/SPH: each phase's time limit)
# The shipped run then trained 8 more students in a third call, on the same warm machine:
#   cd /tmp/kdw && export KD_RES=/tmp/kdres && for s in 31 32 33 34 35 36 37 38; do
#   python3 kd.py student $s & done; wait; python3 ens.py final $OUT
cp wb.pt /tmp/kdw/ && cp *.py /tmp/kdw/ && cd /tmp/kdw || exit 1
export PYTHONUNBUFFERED=1 KD_RES=/tmp/kdres; L=$OUT/log.txt; T0=$(date +%s)
echo "start $(date)" >> $L
export KD_DEADLINE=$((T0 + ${TDL:-110}))
for s in 1 2 3 4 5 6 7 8; do timeout ${TPH:-290} python3 kd.py teacher $s $((s + 8)) > /tmp/t_$s.log 2>&1 & done; wait
grep -h "epoch\|skip\|Error\|error" /tmp/t_*.log >> $L; echo "teachers done $(( $(date +%s) - T0 )) s" >> $L
timeout 60 python3 ens.py teachers >> $L 2>&1
export KD_DEADLINE=$(( $(date +%s) + ${SDL:-80} ))
for s in 21 22 23 24 25 26 27 28; do timeout ${SPH:-190} python3 kd.py student $s $((s + 8)) > /tmp/s_$s.log 2>&1 & done; wait
grep -h "epoch\|skip\|Error\|error" /tmp/s_*.log >> $L; echo "students done $(( $(date +%s) - T0 )) s" >> $L
timeout 60 python3 ens.py final $OUT >> $L 2>&1
echo "end $(( $(date +%s) - T0 )) s" >> $L; tail -c 3000 $L
