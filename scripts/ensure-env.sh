#!/usr/bin/env bash
# Create (once) and print the path of the Python environment of spgnet-repro.
#
# The environment lives outside the checkout, keyed by a hash of env/requirements.txt (change
# that file, or its recipe comment, to force a rebuild), so fresh clones reuse it and a changed
# specification builds a new one:
#   ${SPGNET_ENV_ROOT:-$HOME/.cache/spgnet-repro}/venv-<hash>
# SPGNET_VENV overrides the whole path. The steps follow the project's install recipe
# (torch/torchvision from the local wheel store, inplace-abn 1.1.0 built without build isolation,
# setuptools_scm<10, numpy<2.4). Progress goes to stderr; stdout carries only the path.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
req="$here/env/requirements.txt"
hash="$(sha256sum "$req" | cut -c1-12)"
venv="${SPGNET_VENV:-${SPGNET_ENV_ROOT:-$HOME/.cache/spgnet-repro}/venv-$hash}"
python="${SPGNET_PYTHON:-python3}"

if [ ! -f "$venv/.complete" ]; then
  echo "ensure-env: building the environment in $venv (once; about 10 minutes)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
  # The machine's pip config lists local indexes that do not all exist; their warnings are noise.
  export PIP_NO_WARN_SCRIPT_LOCATION=1
  pip=("$venv/bin/python" -m pip --quiet --no-input)
  "${pip[@]}" install --upgrade pip "setuptools<81" wheel >&2
  "${pip[@]}" install "$(grep '^torch==' "$req")" "$(grep '^torchvision==' "$req")" >&2
  "${pip[@]}" install "setuptools_scm<10" >&2
  # inplace-abn 1.1.0 is sdist-only and builds a CUDA extension whenever torch is a CUDA build:
  # for every GPU architecture the installed torch supports, plus PTX of the newest (which the
  # driver compiles for GPUs newer than the list), so T4, A100, L4/Ada, H100 and Blackwell all run.
  arch_list="$("$venv/bin/python" -c 'import torch; a = [x[3:] for x in torch.cuda.get_arch_list() if x.startswith("sm_")]; print(";".join(f"{x[:-1]}.{x[-1]}" for x in a) + ("+PTX" if a else ""))')"
  echo "ensure-env: inplace-abn CUDA kernels for ${TORCH_CUDA_ARCH_LIST:-${arch_list:-8.0;9.0}}" >&2
  CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-${arch_list:-8.0;9.0}}" \
    MAX_JOBS="${MAX_JOBS:-2}" \
    "${pip[@]}" install --no-build-isolation --no-cache-dir "$(grep '^inplace-abn==' "$req")" >&2
  grep -v -E '^(#|$|torch==|torchvision==|inplace-abn==)' "$req" | xargs "${pip[@]}" install >&2
  "$venv/bin/python" -m pip check >&2
  touch "$venv/.complete"
fi

# The project itself: an editable install (the `spgnet` command and the package outside any
# checkout), made when the environment has none that imports: fresh, or its clone was deleted.
# It is not re-pointed at each clone that runs this script: the start-up hook below makes every
# Python of the environment run the checkout of its current folder (scripts/spgnet_checkout.py).
if ! SPGNET_CHECKOUT_HOOK=0 "$venv/bin/python" -I -c 'import spgnet' 2>/dev/null; then
  "$venv/bin/python" -m pip --quiet install --no-deps --no-build-isolation \
    --config-settings editable_mode=compat -e "$here" >&2
fi
site="$("$venv/bin/python" -I -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if ! cmp -s "$here/scripts/spgnet_checkout.py" "$site/spgnet_checkout.py" || [ ! -f "$site/spgnet_checkout.pth" ]; then
  cp "$here/scripts/spgnet_checkout.py" "$site/.spgnet_checkout.py.$$" && mv "$site/.spgnet_checkout.py.$$" "$site/spgnet_checkout.py"
  echo "import spgnet_checkout" > "$site/spgnet_checkout.pth"
fi
echo "$venv"
