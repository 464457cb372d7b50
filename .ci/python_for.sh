#!/usr/bin/env bash
# Usage: .ci/python_for.sh 3.10
# Prints the path of the newest installed CPython 3.10.x that pyenv manages
# (e.g. /root/.pyenv/versions/3.10.13/bin/python). PATH is not trusted: the
# python3.10 found there may be a pyenv shim that refuses to run until that
# version is selected. Fails with a one-line message if pyenv or the version
# is missing.
set -euo pipefail

minor="${1:?usage: $0 MAJOR.MINOR (e.g. 3.10)}"
if ! [[ "$minor" =~ ^[0-9]+\.[0-9]+$ ]]; then
    echo "python_for.sh: '$minor' is not MAJOR.MINOR (e.g. 3.10)" >&2
    exit 2
fi

pyenv=pyenv
if ! command -v pyenv >/dev/null 2>&1; then
    # Not on PATH (e.g. a shell that skipped pyenv's init): try its usual home.
    pyenv="${PYENV_ROOT:-$HOME/.pyenv}/bin/pyenv"
fi
if ! [[ -x "$(command -v "$pyenv" || true)" ]]; then
    echo "python_for.sh: pyenv is missing: install pyenv (https://github.com/pyenv/pyenv), then 'pyenv install $minor'" >&2
    exit 1
fi

root="$("$pyenv" root)"
# Only plain CPython releases (3.10.13), not 3.10-dev, 3.13.0t or virtualenvs.
pattern="^${minor//./\\.}\\.[0-9]+$"
version="$("$pyenv" versions --bare | grep -E "$pattern" | sort -V | tail -n 1 || true)"
python="$root/versions/$version/bin/python$minor"

if [[ -z "$version" || ! -x "$python" ]]; then
    echo "python_for.sh: CPython $minor is missing (pyenv has: $("$pyenv" versions --bare | tr '\n' ' '| sed 's/ $//')): install it with 'pyenv install $minor'" >&2
    exit 1
fi
echo "$python"
