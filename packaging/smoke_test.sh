#!/usr/bin/env bash
# Smoke test of the BUILT app (dist/usgen-desktop), as a clinician's first start would run it.
#
#   packaging/smoke_test.sh [APP_DIR]     default APP_DIR: dist/usgen-desktop
#
# 1. --selftest headless (QT_QPA_PLATFORM=offscreen): demo project, 2 images, export, window;
# 2. --selftest in a real X window under Xvfb, with a screenshot (docs/images/packaged.png);
# 3. first start with empty user folders: time from exec to the main window shown (median of 3,
#    via --exit-after-show), and that nothing was written into the install folder;
# 4. the folder size (du).
# Each run gets empty HOME/XDG folders (no settings) and the network variables untouched: the
# app must set its offline switches itself. Exit 0 only if every check passed.
# Needs: xvfb (Debian: xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0), imagemagick for the
# screenshot (`import`); without Xvfb step 2 is skipped with a note.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
APP="${1:-$REPO/dist/usgen-desktop}"
EXE="$APP/usgen-desktop"
SHOT="${SHOT:-$REPO/docs/images/packaged.png}"
LOG="${LOG_DIR:-/tmp/usgen-smoke}"
mkdir -p "$LOG"
fail=0
[[ -x "$EXE" ]] || { echo "smoke: $EXE not found; run packaging/build.sh first" >&2; exit 2; }

fresh_home() {  # an empty home: no settings, no projects, like a new user account
  local h; h="$(mktemp -d /tmp/usgen-smoke-home.XXXXXX)"
  echo "$h"
}
run_clean() {  # run_clean HOME cmd... : the app with only a minimal, settings-free environment
  local h="$1"; shift
  env -i PATH=/usr/bin:/bin HOME="$h" XDG_CONFIG_HOME="$h/.config" XDG_DATA_HOME="$h/.local/share" \
      XDG_CACHE_HOME="$h/.cache" LANG=C.UTF-8 ${DISPLAY:+DISPLAY=$DISPLAY} \
      ${QT_QPA_PLATFORM:+QT_QPA_PLATFORM=$QT_QPA_PLATFORM} ${USGEN_SELFTEST_HOLD:+USGEN_SELFTEST_HOLD=$USGEN_SELFTEST_HOLD} \
      "$@"
}
start_xvfb() {  # start_xvfb NAME: a virtual screen on a free display (others may run Xvfb too)
  rm -f "$LOG/$1.display"
  Xvfb -displayfd 3 -screen 0 1400x900x24 -nolisten tcp 3> "$LOG/$1.display" > "$LOG/$1.log" 2>&1 &
  xvfb_pid=$!
  for _ in $(seq 1 40); do [[ -s "$LOG/$1.display" ]] && break; sleep 0.25; done
  disp=":$(tr -d '[:space:]' < "$LOG/$1.display")"
  echo "Xvfb on display $disp"
}
# Files in the install folder before the runs, to prove the app writes nothing there.
before="$(cd "$APP" && find . -type f | sort | md5sum)"

echo "== 1. --selftest, headless (QT_QPA_PLATFORM=offscreen)"
h="$(fresh_home)"
t0=$(date +%s.%N)
QT_QPA_PLATFORM=offscreen run_clean "$h" "$EXE" --selftest 2>&1 | tee "$LOG/selftest-offscreen.log"
rc=${PIPESTATUS[0]}
t1=$(date +%s.%N)
echo "exit $rc, $(echo "$t1 - $t0" | bc) s wall"
[[ $rc == 0 ]] || { echo "smoke: FAIL headless selftest"; fail=1; }
grep -q "\[ok\]   window" "$LOG/selftest-offscreen.log" || { echo "smoke: FAIL no window step"; fail=1; }

echo; echo "== 2. --selftest in a real window under Xvfb"
if command -v Xvfb > /dev/null; then
  start_xvfb xvfb
  h="$(fresh_home)"
  DISPLAY="$disp" USGEN_SELFTEST_HOLD=6 run_clean "$h" "$EXE" --selftest \
      > "$LOG/selftest-xvfb.log" 2>&1 &
  app_pid=$!
  # Screenshot while the self-test holds its window open.
  waited=0; seen=0
  while (( waited < 720 )); do  # up to 180 s: a shipped model makes the self-test longer
    if grep -q "holding" "$LOG/selftest-xvfb.log" 2>/dev/null; then seen=1; break; fi
    kill -0 $app_pid 2>/dev/null || break
    sleep 0.25; waited=$((waited + 1))
  done
  sleep 2.5
  if [[ $seen == 1 ]] && command -v import > /dev/null; then
    mkdir -p "$(dirname "$SHOT")"
    DISPLAY="$disp" import -window root -crop 1290x830+0+0 +repage -resize 1100x "$LOG/packaged-full.png" \
      && convert "$LOG/packaged-full.png" -colors 256 -strip "PNG8:$SHOT" \
      && echo "screenshot: $SHOT ($(du -k "$SHOT" | cut -f1) KiB)"
  else
    echo "smoke: no screenshot (window seen: $seen after $((waited / 4)) s; imagemagick 'import' needed)"
  fi
  wait $app_pid; rc=$?
  cat "$LOG/selftest-xvfb.log"
  kill $xvfb_pid 2>/dev/null; wait $xvfb_pid 2>/dev/null
  echo "exit $rc"
  [[ $rc == 0 ]] || { echo "smoke: FAIL selftest under Xvfb"; fail=1; }
  grep -q "on 'xcb'" "$LOG/selftest-xvfb.log" || { echo "smoke: FAIL window not on xcb"; fail=1; }
else
  echo "smoke: Xvfb not installed; skipped (apt-get install xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0)"
fi

echo; echo "== 3. first start: time to window shown (offscreen, empty user folders, 3 runs)"
times=()
for i in 1 2 3; do
  h="$(fresh_home)"
  s=$(date +%s.%N)
  out="$(QT_QPA_PLATFORM=offscreen run_clean "$h" "$EXE" --exit-after-show 2>&1)"; rc=$?
  e=$(date +%s.%N)
  shown="$(echo "$out" | sed -n 's/.*window shown after \([0-9.]*\) s.*/\1/p' | tail -1)"
  wall="$(echo "$e - $s" | bc)"
  echo "run $i: exit $rc, window shown after ${shown:-?} s (app clock), process wall ${wall} s"
  [[ $rc == 0 && -n "$shown" ]] || { echo "$out" | tail -5; fail=1; }
  # first start imported the demo into the platform data folder, never into the install
  if [[ $i == 1 ]]; then
    if ls "$h/.local/share/usgen-desktop" > /dev/null 2>&1; then
      echo "user data went to: $(cd "$h" && find .local/share/usgen-desktop -maxdepth 2 | head -5 | tr '\n' ' ')"
    fi
    ls "$h/.config/usgen-desktop" > /dev/null 2>&1 && echo "settings went to: $h/.config/usgen-desktop/"
  fi
  times+=("$wall")
done
median="$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)"
echo "median process wall time to window shown and closed: ${median} s"

echo; echo "== 4. a user's first start under Xvfb: window mapped, Help > About"
if command -v Xvfb > /dev/null && command -v xdotool > /dev/null; then
  start_xvfb xvfb2
  h="$(fresh_home)"
  s=$(date +%s.%N)
  DISPLAY="$disp" run_clean "$h" "$EXE" > "$LOG/first-start.log" 2>&1 &
  app_pid=$!
  # time until the main window is mapped on the X server: what a double-click costs
  if win="$(DISPLAY="$disp" timeout 60 xdotool search --sync --onlyvisible --name "USGen Desktop" | head -1)" && [[ -n "$win" ]]; then
    e=$(date +%s.%N)
    echo "first start (xcb, empty user folders): main window mapped after $(echo "$e - $s" | bc) s"
    sleep 2
    # no window manager under Xvfb: give the window the keyboard focus by hand
    DISPLAY="$disp" xdotool windowfocus --sync "$win"
    DISPLAY="$disp" xdotool key alt+h && sleep 0.8 && DISPLAY="$disp" xdotool key a
    if DISPLAY="$disp" timeout 20 xdotool search --sync --onlyvisible --name "About USGen Desktop" > /dev/null; then
      sleep 1.5
      echo "Help > About opened"
      command -v import > /dev/null && DISPLAY="$disp" import -window root "$LOG/about.png" \
        && echo "About screenshot: $LOG/about.png"
    else
      echo "smoke: FAIL Help > About did not open"; fail=1
    fi
  else
    echo "smoke: FAIL the main window never appeared"; cat "$LOG/first-start.log"; fail=1
  fi
  kill $app_pid 2>/dev/null; wait $app_pid 2>/dev/null
  kill $xvfb_pid 2>/dev/null; wait $xvfb_pid 2>/dev/null
else
  echo "smoke: Xvfb or xdotool missing; skipped"
fi

echo; echo "== 5. size"
after="$(cd "$APP" && find . -type f | sort | md5sum)"
if [[ "$before" == "$after" ]]; then echo "install folder unchanged by the runs: ok"
else echo "smoke: FAIL the app wrote into its install folder"; fail=1; fi
du -sh "$APP"
du -sh "$APP"/_internal/torch "$APP"/_internal/PySide6 "$APP"/_internal/cv2 "$APP"/_internal/scipy 2>/dev/null
echo "files: $(find "$APP" -type f | wc -l)"

if [[ $fail == 0 ]]; then echo; echo "smoke test PASSED"; else echo; echo "smoke test FAILED"; fi
exit $fail
