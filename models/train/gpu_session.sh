#!/bin/bash
# One GPU training session for the denoise model, run from the repo root on a lent GPU machine
# (DEVELOPERS.md, "On a lent GPU machine"). MINUTES, WORKERS, SNAP, DEVICE, OUT and SKIP_WHL (dry run
# on a machine whose Python already has the packages) are read from the environment.
# Needs .carry/whl (soundfile, cffi, pycparser, soxr wheels) and .carry/pack (python -m hushbridge.models.train.pack).
MINUTES=${MINUTES:-7.5}
WORKERS=${WORKERS:-14}
OUTD=${OUT:-/tmp/out}
t0=$(date +%s)
[ -n "$SKIP_WHL" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .carry/whl/*.whl || exit 3
mkdir -p /tmp/pkg/hushbridge
for f in bridge/*; do ln -sfn "$PWD/$f" /tmp/pkg/hushbridge/; done
for d in dsp effects models host_scripts; do ln -sfn "$PWD/$d" /tmp/pkg/hushbridge/$d; done
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi -L; nproc
python3 -c "import torch, soundfile, soxr, hushbridge.models.train.data as d; print(torch.__version__, torch.cuda.is_available(), soundfile.__libsndfile_version__)" || exit 4
mkdir -p "$OUTD/ck"
cp models/train/checkpoints/denoise_last.pt models/train/checkpoints/denoise_log.csv "$OUTD/ck/"
echo "setup $(( $(date +%s) - t0 )) s"
python3 -m hushbridge.models.train.train --device ${DEVICE:-cuda} --workers $WORKERS --pack .carry/pack \
    --out "$OUTD/ck" --minutes $MINUTES --threads 2 --snapshot-every ${SNAP:-500} 2>&1 | tee "$OUTD/train.log"
echo "total $(( $(date +%s) - t0 )) s"
ls -la "$OUTD/ck"
