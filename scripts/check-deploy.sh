#!/usr/bin/env bash
# Validates the Kubernetes manifests in deploy/kubernetes against the
# Kubernetes API schemas with kubernetes-validate (from PyPI, installed into
# target/deploy-venv on first use), strictly: unknown fields are errors.
# Custom resources (the ServiceMonitor) have no schema there; tests/deploy.rs
# checks what they select. Exit status 0 when every object validates.
set -euo pipefail
cd "$(dirname "$0")/.."

KV_VERSION=${KUBERNETES_VALIDATE_VERSION:-1.37.0}
K8S_VERSION=${KUBERNETES_VERSION:-1.33.0}
venv=target/deploy-venv

if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    echo "check-deploy: installing kubernetes-validate $KV_VERSION into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION"
fi

files=()
for f in deploy/kubernetes/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] && continue
    files+=("$f")
done
"$venv/bin/kubernetes-validate" --strict --kubernetes-version "$K8S_VERSION" "${files[@]}"
echo "check-deploy: ${#files[@]} manifest files valid for Kubernetes $K8S_VERSION" >&2
