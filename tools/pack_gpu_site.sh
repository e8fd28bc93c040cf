#!/usr/bin/env bash
# Pack what a bare GPU machine with only PyTorch lacks into .gpu/ (about 55 MB), for
# benchmarks/gpu_check.sh there: detectron2 and its pure-Python requirements copied from .venv
# (without detectron2's compiled _C, which pcsc_d2 does not use), pycocotools built for that
# machine's Python, and the I3D weights in float16 (half the size; gpu_check.sh widens them back).
#
# Usage: bash tools/pack_gpu_site.sh [PYTHON_VERSION]     (default 3.12, the GPU machine's)
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${1:-3.12}
SP=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
rm -rf .gpu && mkdir -p .gpu/site
for p in detectron2 fvcore iopath yacs omegaconf antlr4 hydra termcolor; do cp -r "$SP/$p" .gpu/site/; done
rm -f .gpu/site/detectron2/_C*.so
find .gpu -name __pycache__ -prune -exec rm -rf {} +
V=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('pycocotools'))")
WHEELS=$(mktemp -d)
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$WHEELS" "pycocotools==$V"
(cd .gpu/site && unzip -q -o "$WHEELS"/pycocotools-*.whl)
rm -rf "$WHEELS"
[ -f weights/i3d_kinetics400_two_stream.pth ] || .venv/bin/python tools/convert_i3d_weights.py \
  --output weights/i3d_kinetics400_two_stream.pth
.venv/bin/python - <<'PY'
import torch

ckpt = torch.load("weights/i3d_kinetics400_two_stream.pth", map_location="cpu", weights_only=False)
ckpt["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
torch.save(ckpt, ".gpu/i3d_fp16.pth")
PY
grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude
du -sh .gpu
