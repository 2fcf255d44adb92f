#!/usr/bin/env bash
# Vendor the browser JavaScript that renders ipywidgets snapshots offline into book/static/.
#
#   scripts/vendor_js.sh           copy the pinned files if missing or changed (idempotent, offline
#                                  once vendored; runs `npm ci` from package-lock.json otherwise)
#   scripts/vendor_js.sh --update  after bumping versions in package.json: `npm install`, copy,
#                                  and rewrite book/static/SHA256SUMS (commit package*.json + SUMS)
#
# Pins: package.json / package-lock.json at the repository root (node_modules/ is git-ignored).
# The two files land in book/static/ (NOT _static/: jupyter-book 1 would add every .js under
# _static/ to every page and the widgets would render twice). _config.yml points myst-nb's
# nb_ipywidgets_js at them. They are git-ignored (embed-amd.js is 3.6 MB); their checksums are
# committed in book/static/SHA256SUMS, so a fresh clone gets byte-identical files.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/book/static"
SUMS="$DEST/SHA256SUMS"
# source in node_modules -> file name in book/static
FILES=(
  "requirejs/require.js:require.js"
  "@jupyter-widgets/html-manager/dist/embed-amd.js:embed-amd.js"
  # the widget CSS's icon fonts (woff2 only: every browser that runs the widgets reads it);
  # book/static/widgets-shim.js points the widget manager at widget-assets/
  "@jupyter-widgets/html-manager/dist/1551f4f60c37af51121f.woff2:widget-assets/1551f4f60c37af51121f.woff2"
  "@jupyter-widgets/html-manager/dist/7a3337626410ca2f4071.woff2:widget-assets/7a3337626410ca2f4071.woff2"
  "@jupyter-widgets/html-manager/dist/d878b0a6a1144760244f.woff2:widget-assets/d878b0a6a1144760244f.woff2"
)

update=0
case "${1:-}" in
  "") ;;
  --update) update=1 ;;
  *) echo "usage: $0 [--update]" >&2; exit 2 ;;
esac

cd "$ROOT"
if [[ $update -eq 0 && -f "$SUMS" ]] && (cd "$DEST" && sha256sum --check --quiet --status SHA256SUMS); then
  echo "vendor_js: book/static is up to date ($(cut -d' ' -f3 "$SUMS" | tr '\n' ' '))"
  exit 0
fi

command -v npm >/dev/null || {
  echo "vendor_js: npm not found; install Node.js (Debian: apt-get install -y npm)" >&2; exit 1; }

if [[ $update -eq 1 ]]; then
  npm install --ignore-scripts --no-audit --no-fund
else
  npm ci --ignore-scripts --no-audit --no-fund   # exact versions and integrity from the lock file
fi

mkdir -p "$DEST/widget-assets"
for pair in "${FILES[@]}"; do
  src="node_modules/${pair%%:*}"; dst="$DEST/${pair##*:}"
  [[ -f "$src" ]] || { echo "vendor_js: $src missing after npm install" >&2; exit 1; }
  cp "$src" "$dst.tmp" && mv "$dst.tmp" "$dst"
done

if [[ $update -eq 1 || ! -f "$SUMS" ]]; then
  (cd "$DEST" && sha256sum "${FILES[@]##*:}" > SHA256SUMS)
  echo "vendor_js: wrote book/static/SHA256SUMS; commit it with package.json and package-lock.json"
else
  (cd "$DEST" && sha256sum --check --quiet SHA256SUMS) || {
    echo "vendor_js: vendored files do not match book/static/SHA256SUMS (lock file and sums out of sync?)" >&2
    exit 1; }
fi
echo "vendor_js: vendored into book/static: $(cd "$DEST" && ls -1 "${FILES[@]##*:}" | tr '\n' ' ')"
