#!/usr/bin/env bash
# GPU check of the training job, a few minutes on a machine with 1 or more NVIDIA GPUs:
#   1. images/s of one GPU: the backbone alone and the whole extraction pipeline
#      (bench/pipeline_speed.py);
#   2. the real `train` command with 1 worker and with one worker per GPU, for
#      train_layers=head (sharded feature extraction) and train_layers=layer4 (DDP):
#      seconds, images/s and the mean utilisation of each GPU while the job runs
#      (nvidia-smi, sampled every 0.5 s).
# Needs the project's environment (`make venv`, or the training image with this repository)
# and nvidia-smi. Data: DATA=train/valid/test ImageFolders, else 3,000 generated
# 500x375 JPEGs (the size of the cats-and-dogs photos).
#
#   bash bench/gpu_check.sh            # PYTHON=.venv/bin/python by default
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-build/gpu-check}
IMAGE_SIZE=${IMAGE_SIZE:-224}
EPOCHS=${EPOCHS:-2}
GPUS=$(nvidia-smi --list-gpus | wc -l)
mkdir -p "${OUT}"

if [ -z "${DATA:-}" ]; then
  DATA=${OUT}/data
  if [ ! -d "${DATA}/train" ]; then
    "${PYTHON}" -c "
import sys
from pathlib import Path
from launch.synthetic_images import make_dataset
make_dataset(Path(sys.argv[1]), per_class=500, size=(500, 375))
" "${DATA}"
  fi
fi
IMAGES=$(find "${DATA}" -type f | wc -l)
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
echo "data: ${DATA} (${IMAGES} files), image_size ${IMAGE_SIZE}, ${EPOCHS} epochs, ${GPUS} GPUs"

echo
echo "== 1. one GPU: backbone and pipeline images/s"
CUDA_VISIBLE_DEVICES=0 "${PYTHON}" bench/pipeline_speed.py --data "${DATA}" --images 1024 \
  --image-size "${IMAGE_SIZE}" --batch-size 128 --repeats 3

# Runs one training job while sampling every GPU's utilisation; prints one table row.
run_job() {
  local layers=$1 workers=$2
  local job=${OUT}/job-${layers}-w${workers} samples=${OUT}/util-${layers}-w${workers}.csv
  rm -rf "${job}"
  nvidia-smi --query-gpu=index,utilization.gpu --format=csv,noheader,nounits -lms 500 \
    > "${samples}" &
  local sampler=$!
  local started ended
  started=$(date +%s.%N)
  "${PYTHON}" scripts/local.py train --data "${DATA}" --job-dir "${job}" \
    --workers-per-host "${workers}" --hp pretrained=false --hp epochs="${EPOCHS}" \
    --hp image_size="${IMAGE_SIZE}" --hp batch_size=128 --hp train_layers="${layers}" \
    > "${job}.log" 2>&1 || { kill "${sampler}"; tail -30 "${job}.log"; exit 1; }
  ended=$(date +%s.%N)
  kill "${sampler}"
  wait "${sampler}" 2>/dev/null || true
  "${PYTHON}" - "${samples}" "${layers}" "${workers}" "${started}" "${ended}" "${IMAGES}" <<'EOF'
import sys
from collections import defaultdict

samples, layers, workers, started, ended, images = sys.argv[1:]
seconds = float(ended) - float(started)
busy = defaultdict(list)
for line in open(samples):
    index, utilisation = (field.strip() for field in line.split(","))
    busy[index].append(float(utilisation))
mean = ", ".join(f"GPU{index} {sum(v) / len(v):.0f}%" for index, v in sorted(busy.items()))
print(f"| {layers} | {workers} | {seconds:.1f} | {int(images) / seconds:.1f} | {mean} |")
EOF
}

echo
echo "== 2. the training job, 1 worker against one per GPU"
echo "| train_layers | workers | seconds | images/s (whole job) | mean GPU utilisation |"
echo "| --- | ---: | ---: | ---: | --- |"
for layers in head layer4; do
  run_job "${layers}" 1
  if [ "${GPUS}" -gt 1 ]; then
    run_job "${layers}" "${GPUS}"
  fi
done
echo
echo "logs and utilisation samples: ${OUT}"
