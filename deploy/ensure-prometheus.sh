#!/usr/bin/env bash
# The metrics test scrapes the worker with a real Prometheus server on loopback.
# Install Debian's `prometheus` package when it is missing and we may (root, or passwordless sudo).
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ]; then
  SUDO=""
elif sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "prometheus is not installed; install it (Debian/Ubuntu: sudo apt-get install prometheus) and re-run" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q --no-install-recommends prometheus >/dev/null
}
command -v prometheus >/dev/null
