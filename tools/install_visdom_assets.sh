#!/usr/bin/env bash
# Make `python -m visdom.server` start (and its page render) without internet access.
#
# Usage: bash tools/install_visdom_assets.sh [--offline] [PYTHON]
#
# At every start visdom 0.2.4 (visdom/server/build.py) fetches each of its 21 front-end files and
# 8 MathJax files that is missing from its static/ folder from CDNs, and exits when a MathJax
# download fails; static/version.built (holding visdom's version) only stops it from re-fetching
# files that exist. So this script fills static/ with the same files, taken from the npm registry
# with `npm pack`, under visdom's own file names, then writes the marker. With --offline (or
# without npm, or when the registry can't be reached) missing files become empty placeholders:
# the server starts and plotting works, but its page stays blank until this runs again online.
# Idempotent: real files are kept, placeholders are replaced when the registry can be reached.
set -euo pipefail

OFFLINE=0
if [[ "${1:-}" == "--offline" ]]; then OFFLINE=1; shift; fi
PYTHON="${1:-python3}"

# Located without importing visdom (that import alone takes ~1.5 s): a second run stays well under 1 s.
VISDOM_DIR="$("$PYTHON" -c 'import importlib.util, os, sys
spec = importlib.util.find_spec("visdom")
sys.exit(f"visdom is not installed for {sys.executable}") if spec is None else print(os.path.dirname(spec.origin))')"
# visdom.__version__ is its VERSION file, stripped ("no_version_file" without one).
VERSION="$(tr -d '[:space:]' < "$VISDOM_DIR/VERSION" 2>/dev/null || true)"
VERSION="${VERSION:-no_version_file}"
STATIC="$VISDOM_DIR/static"
MATHJAX="js/mathjax/2.7.5"

# npm package | file inside the package | destination under static/ (visdom's name for it)
ASSETS="\
jquery@3.1.1|dist/jquery.min.js|js/jquery.min.js
bootstrap@3.3.7|dist/js/bootstrap.min.js|js/bootstrap.min.js
react@16.2.0|umd/react.production.min.js|js/react-react.min.js
react-dom@16.2.0|umd/react-dom.production.min.js|js/react-dom.min.js
react-modal@3.1.10|dist/react-modal.min.js|js/react-modal.min.js
plotly.js-dist-min@2.11.1|plotly.min.js|js/plotly-plotly.min.js
sjcl@1.0.7|sjcl.js|js/sjcl.js
layout-bin-packer@1.4.0|dist/layout-bin-packer.js.map|js/layout-bin-packer.js.map
d3@3.5.17|d3.min.js|js/d3.v3.min.js
d3-selection-multi@1.0.1|build/d3-selection-multi.js|js/d3-selection-multi.v1.js
save-svg-as-png@1.4.17|lib/saveSvgAsPng.js|js/saveSvgAsPng.js
react-resizable@1.4.6|css/styles.css|css/react-resizable-styles.css
react-grid-layout@0.16.3|css/styles.css|css/react-grid-layout-styles.css
bootstrap@3.3.7|dist/css/bootstrap.min.css|css/bootstrap.min.css
classnames@2.2.5|index.js|fonts/classnames
layout-bin-packer@1.4.0|dist/layout-bin-packer.js|js/layout_bin_packer.js
bootstrap@3.3.7|dist/fonts/glyphicons-halflings-regular.eot|fonts/glyphicons-halflings-regular.eot
bootstrap@3.3.7|dist/fonts/glyphicons-halflings-regular.woff2|fonts/glyphicons-halflings-regular.woff2
bootstrap@3.3.7|dist/fonts/glyphicons-halflings-regular.woff|fonts/glyphicons-halflings-regular.woff
bootstrap@3.3.7|dist/fonts/glyphicons-halflings-regular.ttf|fonts/glyphicons-halflings-regular.ttf
bootstrap@3.3.7|dist/fonts/glyphicons-halflings-regular.svg|fonts/glyphicons-halflings-regular.svg#glyphicons_halflingsregular
mathjax@2.7.5|config/Safe.js|$MATHJAX/config/Safe.js
mathjax@2.7.5|config/TeX-AMS-MML_HTMLorMML.js|$MATHJAX/config/TeX-AMS-MML_HTMLorMML.js
mathjax@2.7.5|extensions/Safe.js|$MATHJAX/extensions/Safe.js
mathjax@2.7.5|jax/output/SVG/fonts/TeX/fontdata.js|$MATHJAX/jax/output/SVG/fonts/TeX/fontdata.js
mathjax@2.7.5|jax/output/SVG/jax.js|$MATHJAX/jax/output/SVG/jax.js
mathjax@2.7.5|jax/output/SVG/fonts/TeX/Size1/Regular/Main.js|$MATHJAX/jax/output/SVG/fonts/TeX/Size1/Regular/Main.js
mathjax@2.7.5|jax/output/SVG/config.js|$MATHJAX/jax/output/SVG/config.js
mathjax@2.7.5|MathJax.js|$MATHJAX/MathJax.js"

# An empty file is a placeholder from an offline run, so it counts as missing.
missing_packages() {
  while IFS='|' read -r package _ dest; do
    [[ -s "$STATIC/$dest" ]] || echo "$package"
  done <<< "$ASSETS" | sort -u
}

fetched=0
packages="$(missing_packages)"
if [[ -n "$packages" && $OFFLINE == 0 ]] && command -v npm > /dev/null; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  # shellcheck disable=SC2086  # one package spec per word
  # Bounded retries and timeouts: where the registry can't be reached this gives up in seconds
  # (npm's defaults retry for over a minute) and falls back to placeholders.
  if (cd "$work" && npm pack --loglevel=error --fetch-retries=1 --fetch-retry-mintimeout=1000 \
        --fetch-retry-maxtimeout=3000 --fetch-timeout=60000 $packages > packed.txt 2> npm.log); then
    while IFS='|' read -r package inner dest; do
      [[ -s "$STATIC/$dest" ]] && continue
      tarball="$work/$(echo "${package%@*}-${package##*@}.tgz" | tr -d '@' | tr '/' '-')"
      mkdir -p "$(dirname "$STATIC/$dest")"
      tar --warning=no-unknown-keyword -xzOf "$tarball" "package/$inner" > "$STATIC/$dest.tmp"
      mv "$STATIC/$dest.tmp" "$STATIC/$dest"
      fetched=$((fetched + 1))
    done <<< "$ASSETS"
  else
    echo "npm pack failed (registry unreachable?); writing placeholders instead:" >&2
    tail -n 5 "$work/npm.log" >&2
  fi
fi

placeholders=0
while IFS='|' read -r _ _ dest; do
  if [[ ! -e "$STATIC/$dest" ]]; then
    mkdir -p "$(dirname "$STATIC/$dest")"
    : > "$STATIC/$dest"
    placeholders=$((placeholders + 1))
  fi
done <<< "$ASSETS"

# The page also links ../user/style.css (a user's own style sheet); visdom ships none, so each page
# load logs an error and the browser a 404. An empty one silences both; an existing one is kept.
mkdir -p "$VISDOM_DIR/user"
[[ -e "$VISDOM_DIR/user/style.css" ]] || : > "$VISDOM_DIR/user/style.css"

echo -n "$VERSION" > "$STATIC/version.built"
empty="$(while IFS='|' read -r _ _ dest; do [[ -s "$STATIC/$dest" ]] || echo x; done <<< "$ASSETS" | wc -l)"
echo "visdom $VERSION assets in $STATIC: $fetched fetched, $placeholders placeholders written," \
     "$empty of $(wc -l <<< "$ASSETS") still placeholders; marker static/version.built written"
if [[ $empty -gt 0 ]]; then
  echo "warning: $empty of visdom's front-end files are empty placeholders: the server starts, but its" \
       "page stays blank until 'bash tools/install_visdom_assets.sh' runs where the npm registry can be" \
       "reached" >&2
fi
