#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: `make test` (or `bash scripts/test.sh`,
# extra arguments go to `cargo test`, e.g. `make test ARGS='--test it api::'`).
#
# Installs what the tests drive and is missing (apt packages, the Python tools of
# tests/requirements.txt in a virtual environment, the npm tools of tests/ui/package.json),
# starts the local PostgreSQL if it is down, and runs `cargo test` on SQLite and PostgreSQL
# with CI=true, so a missing tool or database fails instead of skipping. Needs root (apt)
# only for what is not installed yet. Settings, all optional:
#   TEST_DATABASE_URL  PostgreSQL for the tests (default postgres://postgres@127.0.0.1:5432/postgres)
#   CARGO_TARGET_DIR   build cache, kept between runs (default /var/tmp/messaging-server-target)
#   MESSAGING_VENV     the Python virtual environment (default /var/tmp/messaging-server-venv)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# tests/it/outage.rs mounts test filesystems (mount, mkfs.ext4, fsck.ext4): root's tools.
export PATH="$PATH:/usr/sbin:/sbin"


step() { printf '\n==> %s\n' "$*"; }

step "PostgreSQL"
export TEST_DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
if ! command -v pg_isready >/dev/null; then
    echo "pg_isready not installed: not checked (the PostgreSQL tests will say if it does not answer)"
elif pg_isready -q -d "$TEST_DATABASE_URL"; then
    echo "answering at $TEST_DATABASE_URL"
elif [ -d /etc/postgresql ]; then
    echo "not answering; starting the local cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    for _ in $(seq 1 60); do
        pg_isready -q -d "$TEST_DATABASE_URL" && break
        sleep 1
    done
    pg_isready -d "$TEST_DATABASE_URL" || { echo "PostgreSQL did not become ready in 60 s" >&2; exit 1; }
else
    echo "no PostgreSQL answers at $TEST_DATABASE_URL (set TEST_DATABASE_URL)" >&2
    exit 1
fi

step "Debian packages the tests drive"
# command → package. Only what is missing: a machine may have its own Node.js and npm,
# which Debian's npm package conflicts with ("held broken packages").
declare -A package=(
    [nats-server]=nats-server   # tests/it/nats.rs and others: private servers, a 3-node cluster
    [promtool]=prometheus       # tests/it/deploy.rs: alert rules and dashboard queries
    [chromium]=chromium         # tests/it/ui.rs: the ops console in a browser
    [node]=nodejs
    [npm]=npm
    [openssl]=openssl           # tests/it/edge.rs: a CA for the HTTPS provider stub
    [mkfs.ext4]=e2fsprogs       # tests/it/outage.rs: a filesystem that turns read-only
)
missing=()
for tool in "${!package[@]}"; do
    command -v "$tool" >/dev/null || missing+=("${package[$tool]}")
done
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if (( ${#missing[@]} == 0 )); then
    echo "all installed"
else
    echo "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Re-installs when the list changed: a stamp holds the hash of the files it was made from.
stale() { # stamp file...
    local stamp=$1
    shift
    [ "$(cat "$stamp" 2>/dev/null)" != "$(cat "$@" | sha256sum)" ]
}
stamp() { # stamp file...
    local stamp=$1
    shift
    cat "$@" | sha256sum >"$stamp"
}

step "Python test tools (tests/requirements.txt)"
export MESSAGING_VENV=${MESSAGING_VENV:-/var/tmp/messaging-server-venv}
[ -x "$MESSAGING_VENV/bin/pip" ] || python3 -m venv "$MESSAGING_VENV"
if stale "$MESSAGING_VENV/.requirements.sha256" tests/requirements.txt; then
    "$MESSAGING_VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
    stamp "$MESSAGING_VENV/.requirements.sha256" tests/requirements.txt
else
    echo "up to date in $MESSAGING_VENV"
fi

step "npm test tools (tests/ui/package.json)"
if stale tests/ui/node_modules/.package.sha256 tests/ui/package.json tests/ui/package-lock.json; then
    npm ci --prefix tests/ui --no-audit --no-fund
    stamp tests/ui/node_modules/.package.sha256 tests/ui/package.json tests/ui/package-lock.json
else
    echo "up to date in tests/ui/node_modules"
fi

# The tests find their tools on PATH (tests/it/common/tools.rs).
export PATH="$MESSAGING_VENV/bin:$ROOT/tests/ui/node_modules/.bin:$PATH"
# CI: a test whose tool or database is missing fails instead of skipping.
export CI=${CI:-true}
# Build cache outside the clone, so a fresh clone does not pay for a cold build every run.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/messaging-server-target}

step "cargo test $* (SQLite and PostgreSQL; CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
# --no-fail-fast: one failing test binary must not hide the results of the others.
cargo test --no-fail-fast "$@"
