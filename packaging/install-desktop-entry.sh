#!/bin/sh
# Add USGen Desktop to the desktop's application menu for the current user (no root needed).
# Run from the unpacked folder: ./install-desktop-entry.sh   (./install-desktop-entry.sh --remove)
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
DATA="${XDG_DATA_HOME:-$HOME/.local/share}"
if [ "${1:-}" = "--remove" ]; then
  rm -f "$DATA/applications/usgen-desktop.desktop"
  for s in 16 24 32 48 64 128 256 512; do rm -f "$DATA/icons/hicolor/${s}x${s}/apps/usgen-desktop.png"; done
  rm -f "$DATA/icons/hicolor/scalable/apps/usgen-desktop.svg"
  echo "USGen Desktop removed from the application menu."; exit 0
fi
for s in 16 24 32 48 64 128 256 512; do
  [ -f "$HERE/icons/usgen-$s.png" ] || continue
  mkdir -p "$DATA/icons/hicolor/${s}x${s}/apps"
  cp "$HERE/icons/usgen-$s.png" "$DATA/icons/hicolor/${s}x${s}/apps/usgen-desktop.png"
done
mkdir -p "$DATA/icons/hicolor/scalable/apps" "$DATA/applications"
cp "$HERE/icons/usgen.svg" "$DATA/icons/hicolor/scalable/apps/usgen-desktop.svg"
sed -e "s|^Exec=.*|Exec=\"$HERE/usgen-desktop\" %F|" -e "s|^TryExec=.*|TryExec=$HERE/usgen-desktop|" \
  "$HERE/usgen-desktop.desktop" > "$DATA/applications/usgen-desktop.desktop"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$DATA/applications" || true
command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q "$DATA/icons/hicolor" 2>/dev/null || true
echo "USGen Desktop added to the application menu ($DATA/applications/usgen-desktop.desktop)."
