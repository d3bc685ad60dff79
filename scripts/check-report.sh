#!/usr/bin/env bash
# The search report in a real browser: renders report.html of a tiny search in headless Chromium
# (Debian's, installed when missing) and checks from the DOM that the table has one row per
# history line with the history's numbers, that the page's script ran (the row counter is
# filled) and that nothing in it points outside the file. Keeps a screenshot. Then checks that
# the same check fails on a copy of the report with one row dropped.
#
#   scripts/check-report.sh [OUT_DIR]     (default target/report-check)
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-target/report-check}")"
scripts/install-chromium.sh
cargo build --release -q -p eatnas-cli
rm -rf "$out"
mkdir -p "$out"
target/release/eatnas-cli run --config configs/tiny.toml --out "$out/search" 2> "$out/search.log"

# Renders $1 (an HTML file): its DOM to $2, the browser's log to $3.
render() {
  timeout 120 chromium --headless --no-sandbox --disable-gpu --enable-logging=stderr \
    --virtual-time-budget=2000 --dump-dom "file://$1" > "$2" 2> "$3"
}

check() { # $1: report, $2: name of this check
  render "$1" "$out/$2.dom.html" "$out/$2.browser.log"
  python3 - "$out/search" "$out/$2.dom.html" "$out/$2.browser.log" <<'PY'
import html.parser, json, re, sys
search, dom_path, log_path = sys.argv[1:4]
dom = open(dom_path, encoding="utf-8").read()
history = []
for stage in ["stage1", "transfer", "scratch"]:
    for line in open(f"{search}/{stage}/history.jsonl"):
        history.append((stage, json.loads(line)))

class Rows(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(); self.rows = []; self.row = None; self.cell = None; self.shown = None; self.in_shown = False
        self.urls = []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("src", "href", "action"):
            if k in a: self.urls.append(f"{tag} {k}={a[k]}")
        if tag == "tr" and a.get("class"): self.row = []
        elif tag == "td" and self.row is not None: self.cell = ""
        elif tag == "span" and a.get("id") == "shown": self.in_shown = True; self.shown = ""
    def handle_endtag(self, tag):
        if tag == "td" and self.row is not None: self.row.append(self.cell); self.cell = None
        elif tag == "tr" and self.row is not None: self.rows.append(self.row); self.row = None
        elif tag == "span": self.in_shown = False
    def handle_data(self, data):
        if self.cell is not None: self.cell += data
        if self.in_shown: self.shown += data

p = Rows(); p.feed(dom)
errors = []
if len(p.rows) != len(history):
    errors.append(f"the table has {len(p.rows)} rows; the history has {len(history)} lines")
for row, (stage, record) in zip(p.rows, history):
    want = [stage, str(record["evaluation"]), str(record["id"]), f"{record['fitness']:.4f}", f"{record['accuracy']:.4f}", str(record["madds"]), str(record["params"])]
    got = [row[0], row[1], row[2], row[4], row[5], row[6], row[7]]
    if got != want:
        errors.append(f"row {stage} #{record['evaluation']}: {got} != history {want}")
if p.shown != f"{len(history)} of {len(history)} rows":
    errors.append(f"the page's script did not run to the end (row counter: {p.shown!r})")
if p.urls:
    errors.append(f"the page refers to other resources: {p.urls}")
log = open(log_path, encoding="utf-8", errors="replace").read()
script_errors = [l for l in log.splitlines() if "CONSOLE" in l or "Uncaught" in l]
if script_errors:
    errors.append(f"the browser reported script messages: {script_errors}")
if re.search(r"https?://", dom):
    errors.append("the DOM names a URL")
if errors:
    print("check-report: FAILED\n  " + "\n  ".join(errors)); sys.exit(1)
print(f"check-report: {len(p.rows)} rows match the history, the script ran, nothing fetched")
PY
}

check "$out/search/report.html" report
timeout 120 chromium --headless --no-sandbox --disable-gpu --window-size=1200,2600 \
  --screenshot="$out/report.png" "file://$out/search/report.html" 2> "$out/screenshot.log"
echo "check-report: screenshot $out/report.png"

# The check must catch a broken report: one table row dropped.
python3 - "$out/search/report.html" "$out/broken.html" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rows = list(re.finditer(r"<tr class=\"[a-z]+\">.*?</tr>\n", text))
open(sys.argv[2], "w").write(text[:rows[3].start()] + text[rows[3].end():])
PY
if check "$out/broken.html" broken > "$out/broken.out"; then
  echo "check-report: the check passed a report with a row dropped" >&2
  exit 1
fi
echo "check-report: a report with a row dropped is caught: $(sed -n 2p "$out/broken.out")"
