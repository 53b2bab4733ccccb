#!/usr/bin/env bash
# Build the standalone hushbridge into dist/hushbridge/ (one folder: run dist/hushbridge/hushbridge).
# Needs the [build] extra: pip install -e '.[build]'. JACK's and PortAudio's libraries are the
# system's (as for the Python package); everything else travels in the folder.
set -euo pipefail
cd "$(dirname "$0")"
python -m PyInstaller --noconfirm --clean --distpath ../dist --workpath ../build/pyinstaller hushbridge.spec
echo "built: $(cd ../dist/hushbridge && pwd)/hushbridge"
