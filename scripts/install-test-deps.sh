#!/usr/bin/env bash
# Installs the system packages usher's tests need, only when missing.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# redis-server also runs Sentinel (`redis-server sentinel.conf --sentinel`;
# Debian's separate redis-sentinel package only adds that name and a system
# service): the Sentinel tests use redis-sentinel when it is there, else this.
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
command -v curl >/dev/null 2>&1 || need+=(curl)  # the README examples (TestReadmeDevExamples)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The interop matrix runs real client libraries (oidc-client-ts,
# @auth0/auth0-spa-js, openid-client) pinned in e2e/interop/package-lock.json,
# and the accessibility test injects axe-core from there. A node_modules from
# before a lock change (or missing a package) is reinstalled.
lock=e2e/interop/package-lock.json
stamp=e2e/interop/node_modules/.usher-lock.sha256
if [ -f "$lock" ]; then
  sum=$(sha256sum "$lock" | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sum" ] || [ ! -f e2e/interop/node_modules/axe-core/axe.min.js ]; then
    echo "installing the interop test clients (npm ci)"
    npm ci --prefix e2e/interop --ignore-scripts --no-audit --no-fund >/dev/null
    echo "$sum" > "$stamp"
  fi
fi
