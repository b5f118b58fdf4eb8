#!/usr/bin/env bash
# Build the one-folder app dist/usgen-desktop/ from a clean venv (build/venv-pack).
#
#   packaging/build.sh            CPU torch (torch==2.13.0), reuses build/venv-pack if present
#   packaging/build.sh --clean    start from a new venv and an empty PyInstaller cache
#   TORCH_SPEC='torch==2.13.0' TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#       packaging/build.sh --clean        a CUDA build on a GPU desktop
#
# Environment:
#   PYTHON           interpreter for the venv (default python3; must be 3.11+)
#   TORCH_SPEC       the torch requirement to install first (default torch==2.13.0)
#   TORCH_INDEX_URL  extra index for torch wheels (the CUDA builds live outside PyPI)
#   USGEN_STRIP=1    strip symbols from shared libraries (smaller folder)
#   USGEN_MODELS_SRC a models folder to ship instead of <repo>/models (weights, configs, cards)
#   USGEN_WITH_CONTROLNET=1  also bundle transformers for the optional ControlNet backend
# Writes dist/usgen-desktop/ (git-ignored). Log: everything goes to stdout.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/build/venv-pack}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
DIST="$REPO/dist"
WORK="$REPO/build/pyinstaller"
APP="$DIST/usgen-desktop"

clean=0
for arg in "$@"; do
  case "$arg" in
    --clean) clean=1 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

step() { printf '\n== %s  (%s)\n' "$1" "$(date +%H:%M:%S)"; }
t_start=$(date +%s)

if [[ $clean == 1 ]]; then
  step "clean: removing $VENV, $WORK and $APP"
  rm -rf "$VENV" "$WORK" "$APP"
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  step "venv: $PYTHON -m venv $VENV"
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ needed"'
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check)

# torch first, as the user chose it: the app's own requirement (torch>=2.2) is then already
# met and pip cannot pull a second, multi-GB CUDA build behind our back.
step "torch: $TORCH_SPEC${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}"
if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
  "${PIP[@]}" "$TORCH_SPEC" --extra-index-url "$TORCH_INDEX_URL"
else
  "${PIP[@]}" "$TORCH_SPEC"
fi

# constraints.txt pins the CPU torch of CI; with another TORCH_SPEC, drop that pin so the
# installed torch stands.
CONSTRAINTS="$REPO/constraints.txt"
if [[ "$TORCH_SPEC" != "torch==2.13.0" ]]; then
  mkdir -p "$REPO/build"
  grep -v -E '^\s*torch([=<>! ]|$)' "$REPO/constraints.txt" > "$REPO/build/constraints-pack.txt"
  CONSTRAINTS="$REPO/build/constraints-pack.txt"
fi

step "app and PyInstaller (pip install -c $(basename "$CONSTRAINTS") .)"
extra=""
[[ "${USGEN_WITH_CONTROLNET:-}" == 1 ]] && extra="[controlnet]"
"${PIP[@]}" -c "$CONSTRAINTS" "$REPO$extra" "pyinstaller>=6"

"$PY" - <<'EOF'
import torch, PySide6, PyInstaller
build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
print(f"torch {torch.__version__} ({build}), PySide6 {PySide6.__version__}, "
      f"PyInstaller {PyInstaller.__version__}")
EOF

step "PyInstaller: packaging/usgen-desktop.spec -> $APP"
rm -rf "$APP"
(cd "$REPO" && USGEN_REPO="$REPO" "$PY" -m PyInstaller --noconfirm --log-level WARN \
    --distpath "$DIST" --workpath "$WORK" packaging/usgen-desktop.spec)

step "extras: licences, desktop entry, icons, usgen wrapper"
"$PY" -c "import sys; sys.path.insert(0, '$REPO'); from usgen_desktop.licenses import write_licenses_file; write_licenses_file('$APP/LICENSES.txt')"
cp "$REPO/packaging/usgen-desktop.desktop" "$APP/"
mkdir -p "$APP/icons"
cp "$REPO"/resources/icons/usgen.svg "$REPO"/resources/icons/usgen-*.png "$APP/icons/"
cp "$REPO/packaging/install-desktop-entry.sh" "$APP/"
# `usgen` next to the editor: the command line without a second copy of the libraries.
cat > "$APP/usgen" <<'EOF'
#!/bin/sh
# The usgen command line of this installation (same libraries as the editor).
exec "$(dirname "$(readlink -f "$0")")/usgen-desktop" --cli "$@"
EOF
chmod +x "$APP/usgen" "$APP/install-desktop-entry.sh"

# Sanity checks that fail the build rather than the user's first start.
test -x "$APP/usgen-desktop"
test -d "$APP/_internal/resources"
ls "$APP"/_internal/PySide6/Qt/plugins/platforms/ | grep -q offscreen \
  || { echo "build.sh: the Qt offscreen platform plugin is missing" >&2; exit 1; }
ls "$APP"/_internal/PySide6/Qt/plugins/platforms/ | grep -q xcb \
  || { echo "build.sh: the Qt xcb platform plugin is missing" >&2; exit 1; }
ls "$APP"/_internal/qtawesome/fonts/*.ttf > /dev/null

step "done in $(( $(date +%s) - t_start )) s: $(du -sh "$APP" | cut -f1) in $APP"
echo "Next: packaging/smoke_test.sh"
