#!/usr/bin/env bash
# Set up pic_plugin's stack on a machine that has only Python 3.11 and a C++ compiler.
#
# Two profiles, so that an install is sized to the job:
#   pretrain  pre-training, kNN evaluation and the linear probe: torch, mmengine, mmpretrain and mmcv-lite (a
#             pure-Python wheel: nothing is compiled). What `make demo` needs.
#   full      (default) adds mmcv with its C++ ops, built against the installed torch (cached per torch version, so
#             a second run does not rebuild), mmdet, mmsegmentation, openmim, the optional mmselfsup entry point
#             and the test tools: the downstream detection / segmentation configs and `make test`.
# Both create a virtual environment (default: <repo>/.venv) and install this package in editable mode. Safe to
# run again: every step skips what is already done; `full` replaces mmcv-lite by mmcv, and `pretrain` keeps a
# full mmcv that is already there.
#
# Environment knobs:
#   PIC_PROFILE       pretrain | full                              (default: full)
#   PIC_VENV          where the virtual environment lives          (default: <repo>/.venv)
#   PIC_CACHE         where built mmcv wheels are kept             (default: ~/.cache/pic_plugin)
#   PIC_TORCH_SPEC    pip requirement(s) for torch / torchvision   (default: the versions below)
#   PIC_NO_MMSELFSUP  set to 1 to skip the optional mmselfsup extra (full profile)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROFILE=${PIC_PROFILE:-full}
VENV=${PIC_VENV:-$ROOT/.venv}
CACHE=${PIC_CACHE:-$HOME/.cache/pic_plugin}
TORCH_SPEC=${PIC_TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
MMCV_VERSION=2.1.0
# setuptools >= 77 for torch, < 81 because mmcv's setup.py still imports pkg_resources.
SETUPTOOLS_SPEC='setuptools>=77,<81'

log() { printf '[setup_env] %s\n' "$*"; }
case "$PROFILE" in
  pretrain|full) ;;
  *) log "PIC_PROFILE=$PROFILE is not 'pretrain' or 'full'"; exit 2 ;;
esac
start=$(date +%s)

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment at $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }
has_mmcv_ops() { "$PY" -c "import mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null; }

log "profile $PROFILE: installing build tools and torch ($TORCH_SPEC)"
pip_install "$SETUPTOOLS_SPEC" wheel
# shellcheck disable=SC2086
pip_install $TORCH_SPEC

install_full_mmcv() {
  local torch_version wheel_dir build_dir
  torch_version=$("$PY" -c 'import torch; print(torch.__version__)')
  wheel_dir="$CACHE/mmcv-$MMCV_VERSION-torch-$torch_version"
  if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
    log "building mmcv $MMCV_VERSION with ops against torch $torch_version (about 12 min on 2 cores)"
    pip_install ninja
    build_dir=$(mktemp -d)
    "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
      --no-build-isolation "mmcv==$MMCV_VERSION" -d "$build_dir"
    tar xzf "$build_dir/mmcv-$MMCV_VERSION.tar.gz" -C "$build_dir"
    # torch >= 2.10 headers need C++20; mmcv 2.1.0 asks for C++17 on its CPU extension.
    if "$PY" -c "import sys, torch; from packaging.version import Version as V; sys.exit(V(torch.__version__).release < (2, 14))"; then
      sed -i "s/'-std=c++17'/'-std=c++20'/g" "$build_dir/mmcv-$MMCV_VERSION/setup.py"
    fi
    mkdir -p "$wheel_dir"
    MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip wheel --disable-pip-version-check -q --no-deps \
      --no-build-isolation --no-cache-dir "$build_dir/mmcv-$MMCV_VERSION" -w "$wheel_dir"
    rm -rf "$build_dir"
  fi
  # mmcv-lite and mmcv install the same `mmcv` package: only one of them may be there
  "$PY" -m pip uninstall --disable-pip-version-check -q -y mmcv-lite 2>/dev/null || true
  log "installing mmcv from $wheel_dir"
  pip_install --no-deps --force-reinstall "$wheel_dir"/mmcv-*.whl
}

if [ "$PROFILE" = full ]; then
  has_mmcv_ops || install_full_mmcv
  extras=tests,mim,det,seg
  [ "${PIC_NO_MMSELFSUP:-0}" = 1 ] || extras="$extras,mmselfsup"
  log "installing the OpenMMLab stack and pic_plugin[$extras]"
  pip_install -e "$ROOT[$extras]"
  # openmim pulls openxlab, which downgrades setuptools below what torch extensions need.
  pip_install "$SETUPTOOLS_SPEC"
  "$PY" -c 'import mmcv.ops, mmdet, mmseg, mmpretrain, pic_plugin'
else
  if has_mmcv_ops; then
    log "keeping the full mmcv $MMCV_VERSION that is installed"
  else
    lite="[lite]"
  fi
  log "installing mmengine, mmpretrain and pic_plugin${lite:-}"
  pip_install -e "$ROOT${lite:-}"
  "$PY" -c 'import mmcv, mmpretrain, pic_plugin'
fi
log "done in $(( $(date +%s) - start )) s; activate with: source $VENV/bin/activate"
