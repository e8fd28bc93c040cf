#!/usr/bin/env bash
# Every GPU measurement and CUDA code path in one command (about 9 minutes on an H200):
#   1. benchmarks/model_speed.py --device cuda, full PCSC (T = 4, every box cooperated), K = 8 at
#      240x320, batch 8: bf16 autocast with the multiply-add count and the kernel profile (top
#      ops, host synchronisations per iteration), then fp32; key frames/s and peak GPU memory;
#   2. the main job on CUDA with bf16 AMP (300 iterations): training, TR training, evaluation;
#   3. the demo on one synthetic test video, with the main job's TR weights.
# Each part has its own time limit, so one failure leaves the others' results. Outputs, 7 files:
# $OUT/{env.txt, speed_bf16.txt, speed_fp32.txt, main_job.log, main_results.md,
# train_metrics.json, demo.log}.
#
#   bash benchmarks/gpu_check.sh                  # where pcsc_d2 is installed (make setup)
#   bash tools/pack_gpu_site.sh; bash benchmarks/gpu_check.sh   # a bare machine with only
#                  # PyTorch: carry .gpu/ (detectron2 & co., float16 I3D weights) along
#   DEV=cpu QUICK=1 PY=.venv/bin/python bash benchmarks/gpu_check.sh   # dry run on CPU, ~7 min
#
# Environment: OUT (default output/gpu_check), PY (python3), DEV (cuda), QUICK (0),
# EXTRA_PATH (prepended to PYTHONPATH). Data and scratch go to /tmp.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-output/gpu_check}; mkdir -p "$OUT"
DEV=${DEV:-cuda}; QUICK=${QUICK:-0}; PY=${PY:-python3}
export PYTHONPATH=${EXTRA_PATH:+$EXTRA_PATH:}$PWD/.gpu/site:$PWD PYTHONUNBUFFERED=1
export PYTHONWARNINGS=ignore DETECTRON2_DATASETS=/tmp/datasets
T0=$(date +%s)
stamp() { echo "== $(( $(date +%s) - T0 )) s: $*"; }
if [ "$QUICK" = 1 ]; then B=1; IT=1; WU=1; ITERS=8; AMP=(); else B=8; IT=10; WU=3; ITERS=300
  AMP=(SOLVER.AMP.ENABLED True TEST.PCSC.AMP True); fi
stamp start
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv; nproc
  $PY -c "import sys, torch, numpy, cv2, detectron2, pcsc_d2; print(sys.version.split()[0], 'torch', torch.__version__, 'numpy', numpy.__version__, 'cv2', cv2.__version__, 'cuda', torch.cuda.is_available())" || exit 1
} 2>&1 | tee "$OUT/env.txt"; [ "${PIPESTATUS[0]}" = 0 ] || exit 1
mkdir -p weights
[ -f weights/i3d_kinetics400_two_stream.pth ] || [ ! -f .gpu/i3d_fp16.pth ] || $PY -c "import torch; sd = torch.load('.gpu/i3d_fp16.pth', weights_only=False); sd['model'] = {k: v.float() for k, v in sd['model'].items()}; torch.save(sd, 'weights/i3d_kinetics400_two_stream.pth')"

stamp speed bf16
timeout 180 $PY benchmarks/model_speed.py --device $DEV --batch $B --stages 4 --coop-all \
  --iters $IT --warmup $WU --kernels --profile-rows 15 2>&1 | tee "$OUT/speed_bf16.txt"
stamp speed fp32
timeout 100 $PY benchmarks/model_speed.py --device $DEV --batch $B --stages 4 --coop-all \
  --iters $IT --warmup $WU --fp32 --no-flops 2>&1 | tee "$OUT/speed_fp32.txt"

stamp main job
rm -rf /tmp/main_gpu
timeout 220 $PY tools/main_job.py --output /tmp/main_gpu --opts MODEL.DEVICE $DEV "${AMP[@]}" \
  DATALOADER.NUM_WORKERS 6 SOLVER.MAX_ITER $ITERS SOLVER.STEPS "($((ITERS * 3 / 4)), $((ITERS * 92 / 100)))" \
  SOLVER.CHECKPOINT_PERIOD 1000 > "$OUT/main_job.log" 2>&1
echo "main job exit status $?"
grep -E "eta:|Step|Results|\|" "$OUT/main_job.log" | tail -25
cp /tmp/main_gpu/results.md "$OUT/main_results.md" 2>/dev/null
cp /tmp/main_gpu/pcsc/metrics.json "$OUT/train_metrics.json" 2>/dev/null

stamp demo
V=$(cd /tmp/datasets/synthetic/rgb-images && ls -d */* | head -1)
$PY -c "
import cv2, glob
files = sorted(glob.glob('/tmp/datasets/synthetic/rgb-images/$V/*.jpg'))
h, w = cv2.imread(files[0]).shape[:2]
out = cv2.VideoWriter('/tmp/in.mp4', cv2.VideoWriter_fourcc(*'mp4v'), 25, (w, h))
for f in files: out.write(cv2.imread(f))
out.release()"
timeout 50 $PY -m pcsc_d2.demo --video /tmp/in.mp4 --config-file configs/pcsc_synthetic.yaml \
  --weights /tmp/main_gpu/tr/model_tr.pth --output /tmp/demo.mp4 \
  --opts MODEL.DEVICE $DEV "${AMP[@]}" > "$OUT/demo.log" 2>&1
echo "demo exit status $?"; tail -4 "$OUT/demo.log"
stamp end
