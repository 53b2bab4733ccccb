#!/bin/bash
# One GPU training session for the denoise model, run from the repo root on a lent GPU machine
# (DEVELOPERS.md, "On a lent GPU machine"). MINUTES, WORKERS, SNAP, DEVICE, OUT and SKIP_WHL (dry run
# on a machine whose Python already has the packages) are read from the environment. RUNS holds
# one or more runs side by side, ";"-separated, each "name" or "name --set table.key=value ...":
# every run resumes from models/train/checkpoints/denoise_last.pt into $OUT/<name>/ and gets
# WORKERS / (number of runs) processes building its mixtures.
# Needs .carry/whl (soundfile, cffi, pycparser, soxr wheels) and .carry/pack (python -m hushbridge.models.train.pack).
MINUTES=${MINUTES:-7.5}
WORKERS=${WORKERS:-14}
OUTD=${OUT:-/tmp/out}
RUNS=${RUNS:-main}
t0=$(date +%s)
[ -n "$SKIP_WHL" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .carry/whl/*.whl || exit 3
mkdir -p /tmp/pkg/hushbridge
for f in bridge/*; do ln -sfn "$PWD/$f" /tmp/pkg/hushbridge/; done
for d in dsp effects models host_scripts; do ln -sfn "$PWD/$d" /tmp/pkg/hushbridge/$d; done
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi -L; nproc
python3 -c "import torch, soundfile, soxr, hushbridge.models.train.data as d; print(torch.__version__, torch.cuda.is_available(), soundfile.__libsndfile_version__)" || exit 4
IFS=';' read -ra runs <<< "$RUNS"
per=$(( WORKERS / ${#runs[@]} ))
echo "setup $(( $(date +%s) - t0 )) s; ${#runs[@]} run(s), $per workers each"
pids=()
for spec in "${runs[@]}"; do
    read -ra words <<< "$spec"
    name=${words[0]}
    mkdir -p "$OUTD/$name"
    cp models/train/checkpoints/denoise_last.pt models/train/checkpoints/denoise_log.csv "$OUTD/$name/"
    python3 -m hushbridge.models.train.train --device ${DEVICE:-cuda} --workers $per --pack .carry/pack \
        --out "$OUTD/$name" --minutes $MINUTES --threads 1 --snapshot-every ${SNAP:-500} "${words[@]:1}" \
        > "$OUTD/$name/train.log" 2>&1 &
    pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait $p || rc=$?; done
# a call returns at most 8 files: with several runs, the snapshots stand in for denoise_best.pt
[ ${#runs[@]} -gt 1 ] && rm -f "$OUTD"/*/denoise_best.pt
for spec in "${runs[@]}"; do read -ra words <<< "$spec"; echo "== ${words[0]}"; tail -n 4 "$OUTD/${words[0]}/train.log"; done
echo "total $(( $(date +%s) - t0 )) s"
ls -la "$OUTD"/*
exit $rc
