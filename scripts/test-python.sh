#!/usr/bin/env bash
# Runs the tests of contrib/opencontext (the OpenContext consumer) with
# pytest, in a venv at contrib/opencontext/.venv that sees the interpreter's
# own packages. What the tests need is pydantic 2 and pytest: taken from the
# interpreter (or pytest from Debian's python3-pytest, which
# scripts/ensure-deps.sh installs) when present, otherwise installed into the
# venv from the package registry with the package's test extras.
# PYTHON picks the interpreter (default python3); PYTEST_ARGS replaces the
# arguments (default: tests).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
dir=contrib/opencontext
venv=$dir/.venv
debian_site=/usr/lib/python3/dist-packages

command -v "$py" >/dev/null 2>&1 || { echo "test-python: $py not found: install Python 3.10 or newer" >&2; exit 1; }
# A venv made by another interpreter (PYTHON changed) is made again.
want=$("$py" -c 'import sys; print(sys.version)')
if [ -x "$venv/bin/python" ] && [ "$("$venv/bin/python" -c 'import sys; print(sys.version)' 2>/dev/null)" != "$want" ]; then
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv --system-site-packages "$venv" || {
    echo "test-python: $py -m venv failed (Debian: apt-get install -y python3-venv python3-pip)" >&2
    rm -rf "$venv"; exit 1; }
fi
vpy=$PWD/$venv/bin/python

has_pydantic2() { "$vpy" -c 'import sys, pydantic; sys.exit(int(pydantic.VERSION.split(".")[0]) < 2)' 2>/dev/null; }
has_pytest() { "$vpy" -c "import sys; sys.path.append('$debian_site'); import pytest" 2>/dev/null; }

if has_pydantic2 && has_pytest; then
  # Nothing to fetch: the package from its source tree, as an editable install would.
  site=$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$PWD/$dir/src" > "$site/chatbuf_opencontext_src.pth"
else
  echo "test-python: installing $dir with its test extras into $venv" >&2
  "$vpy" -m pip install -q -e "$dir[test]" || {
    echo "test-python: could not install pydantic>=2 and pytest: install them for $py and run again" >&2
    exit 1; }
fi
"$vpy" -c 'import chatbuf_opencontext' || { echo "test-python: chatbuf_opencontext does not import" >&2; exit 1; }

# pytest exits 5 when it collected no test: that is a failure here.
set +e
(cd "$dir" && "$vpy" -c "
import sys
sys.path.append('$debian_site')  # last: Debian's pytest only where the interpreter has none
import pytest
sys.exit(pytest.main(sys.argv[1:]))
" -p no:cacheprovider ${PYTEST_ARGS:-tests})
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test-python: pytest collected no tests in $dir/tests" >&2
  exit 1
fi
exit "$rc"
