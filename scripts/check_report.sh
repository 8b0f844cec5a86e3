#!/usr/bin/env bash
# Opens a run's report.html in headless Chromium and saves a full-page screenshot, so the
# page can be checked as a browser renders it (tables, inline SVG curves, base64
# overlays). Also prints what the browser's DOM holds (tables, SVG charts, images) and
# fails when the table or the curves are missing.
#
#   wsol report RUN_DIR && scripts/check_report.sh RUN_DIR [OUT.png]
#
# Needs chromium (Debian: apt-get install chromium).
set -eu
run=$1
out=${2:-$run/report.png}
page=$(realpath "$run/report.html")
flags=(--headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking
       --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)")
chromium "${flags[@]}" --window-size=1100,2400 --screenshot="$out" "file://$page" 2>/dev/null
dom=$(chromium "${flags[@]}" --dump-dom "file://$page" 2>/dev/null)
tables=$(grep -o "<table" <<<"$dom" | wc -l)
svgs=$(grep -o "<svg" <<<"$dom" | wc -l)
imgs=$(grep -o "<img" <<<"$dom" | wc -l)
echo "report: $tables table(s), $svgs SVG chart(s), $imgs image(s); screenshot $out"
[ "$tables" -ge 1 ] && [ "$svgs" -ge 1 ] || { echo "report is missing its table or curves" >&2; exit 1; }
