#!/usr/bin/env bash
# Sets up the real parts of the end-to-end lane (tests/e2e/): Node 24 (the npm "node" package), the
# OpenClaw CLI (npm), its IRC channel plugin (installed into a template OpenClaw state dir), ngircd
# (Debian) and an `openclaw` wrapper that runs on that Node. Re-running skips what is already there.
# Needs root for apt-get (ngircd) and about 850 MB under $TP_E2E_BASE.
# The Matrix lane (TP_E2E_MATRIX=0 skips it): a venv with the Synapse homeserver and a second template
# state dir with OpenClaw's Matrix plugin (about 300 MB more).
# The Claude Code lane (TP_E2E_CLAUDE=0 skips it): Claude Code from npm, its native binary included
# (about 400 MB more).
set -euo pipefail

BASE=${TP_E2E_BASE:-/opt/task-pulse-e2e}
NODE_VERSION=${TP_NODE_VERSION:-24.21.0}
OPENCLAW_VERSION=${TP_OPENCLAW_VERSION:-2026.9.6}
IRC_PLUGIN_SPEC=${TP_IRC_PLUGIN_SPEC:-@openclaw/irc@2026.9.5}
MATRIX=${TP_E2E_MATRIX:-1}
MATRIX_PLUGIN_SPEC=${TP_MATRIX_PLUGIN_SPEC:-@openclaw/matrix@2026.9.6}
SYNAPSE_SPEC=${TP_SYNAPSE_SPEC:-matrix-synapse==1.163.2}
CLAUDE=${TP_E2E_CLAUDE:-1}
CLAUDE_CODE_VERSION=${TP_CLAUDE_CODE_VERSION:-2.1.332}

NODE_BIN="$BASE/node/node_modules/node/bin/node"
OPENCLAW_MJS="$BASE/openclaw/node_modules/openclaw/openclaw.mjs"
TEMPLATE="$BASE/state-template"
MATRIX_TEMPLATE="$BASE/state-template-matrix"
SYNAPSE_VENV="$BASE/synapse-venv"
CLAUDE_BIN="$BASE/claude-code/node_modules/.bin/claude"

mkdir -p "$BASE" "$BASE/bin" "$BASE/lib"
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false

step() {  # step NAME FUNCTION: run and time one step
  local name=$1 fn=$2 t0 t1
  t0=$(date +%s.%N)
  echo "== [$name] start"
  "$fn"
  t1=$(date +%s.%N)
  printf '== [%s] done in %.1fs\n' "$name" "$(echo "$t1 - $t0" | bc)"
}

install_node() {
  if [ -x "$NODE_BIN" ] && [ "$("$NODE_BIN" -v)" = "v$NODE_VERSION" ]; then
    echo "skip: node v$NODE_VERSION already at $NODE_BIN"; return
  fi
  mkdir -p "$BASE/node"
  [ -f "$BASE/node/package.json" ] || echo '{"name":"tp-e2e-node","private":true}' > "$BASE/node/package.json"
  (cd "$BASE/node" && npm install --no-audit --no-fund "node@$NODE_VERSION")
  "$NODE_BIN" -v
}

install_openclaw() {
  local have=""
  [ -f "$BASE/openclaw/node_modules/openclaw/package.json" ] &&
    have=$("$NODE_BIN" -p "require('$BASE/openclaw/node_modules/openclaw/package.json').version")
  if [ "$have" = "$OPENCLAW_VERSION" ]; then
    echo "skip: openclaw $have already at $OPENCLAW_MJS"; return
  fi
  mkdir -p "$BASE/openclaw"
  [ -f "$BASE/openclaw/package.json" ] || echo '{"name":"tp-e2e-openclaw","private":true}' > "$BASE/openclaw/package.json"
  # Node 24 first on PATH so openclaw's install scripts run under a supported Node.
  (cd "$BASE/openclaw" && PATH="$BASE/node/node_modules/.bin:$PATH" npm install --no-audit --no-fund "openclaw@$OPENCLAW_VERSION")
  "$NODE_BIN" "$OPENCLAW_MJS" --version
}

install_wrapper() {
  cat > "$BASE/bin/openclaw" <<EOF
#!/bin/sh
# openclaw CLI under the bundled Node 24 (system node v20 lacks node:sqlite).
exec "$NODE_BIN" "$OPENCLAW_MJS" "\$@"
EOF
  chmod +x "$BASE/bin/openclaw"
  ln -sf "$NODE_BIN" "$BASE/bin/node"
  "$BASE/bin/openclaw" --version
}

install_ngircd() {
  if command -v ngircd >/dev/null 2>&1; then
    echo "skip: $(ngircd --version 2>/dev/null | head -1)"; return
  fi
  apt-get update -qq
  # policy-rc.d on this machine keeps the system service from starting; we never use it.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ngircd
  ngircd --version | head -1
}

make_state_template() {
  # A pristine OPENCLAW_STATE_DIR with the IRC plugin installed. Tests copy it (cp -a TEMPLATE/. TMP/)
  # and add channels.irc to the copy's openclaw.json. Copies refer to the plugin files under this path,
  # so keep the template where it is.
  if ls "$TEMPLATE"/npm/projects/openclaw-irc-*/node_modules/@openclaw/irc/package.json >/dev/null 2>&1 &&
     grep -q '"irc"' "$TEMPLATE/openclaw.json" 2>/dev/null; then
    echo "skip: IRC plugin already installed in $TEMPLATE"; return
  fi
  rm -rf "$TEMPLATE"; mkdir -p "$TEMPLATE"
  (cd /tmp && OPENCLAW_STATE_DIR="$TEMPLATE" NO_COLOR=1 "$NODE_BIN" "$OPENCLAW_MJS" plugins install "$IRC_PLUGIN_SPEC")
}

install_synapse() {
  # The homeserver the Matrix test starts privately (its own config, data and port in a tmp dir).
  if "$SYNAPSE_VENV/bin/python" -c 'import synapse' 2>/dev/null; then
    echo "skip: matrix-synapse $("$SYNAPSE_VENV/bin/python" -c 'import synapse; print(synapse.__version__)') already in $SYNAPSE_VENV"
    return
  fi
  rm -rf "$SYNAPSE_VENV"
  python3 -m venv "$SYNAPSE_VENV"
  "$SYNAPSE_VENV/bin/pip" install -q --disable-pip-version-check "$SYNAPSE_SPEC"
  "$SYNAPSE_VENV/bin/python" -c 'import synapse; print("matrix-synapse", synapse.__version__)'
}

make_matrix_template() {
  # Like the IRC template, with the Matrix plugin; the test adds channels.matrix to its copy.
  if ls "$MATRIX_TEMPLATE"/npm/projects/openclaw-matrix-*/node_modules/@openclaw/matrix/package.json \
       >/dev/null 2>&1 && grep -q '"matrix"' "$MATRIX_TEMPLATE/openclaw.json" 2>/dev/null; then
    echo "skip: Matrix plugin already installed in $MATRIX_TEMPLATE"; return
  fi
  rm -rf "$MATRIX_TEMPLATE"; mkdir -p "$MATRIX_TEMPLATE"
  (cd /tmp && OPENCLAW_STATE_DIR="$MATRIX_TEMPLATE" NO_COLOR=1 "$NODE_BIN" "$OPENCLAW_MJS" plugins install "$MATRIX_PLUGIN_SPEC")
}

install_claude_code() {
  # For the hook lane (test_claude_code.py). It talks to a stand-in of the Messages API that the test
  # starts, so it needs no account and no network. Its npm package carries the native binary.
  local have=""
  [ -x "$CLAUDE_BIN" ] && have=$("$CLAUDE_BIN" --version 2>/dev/null | cut -d' ' -f1)
  if [ "$have" = "$CLAUDE_CODE_VERSION" ]; then
    echo "skip: Claude Code $have already at $CLAUDE_BIN"; return
  fi
  mkdir -p "$BASE/claude-code"
  [ -f "$BASE/claude-code/package.json" ] ||
    echo '{"name":"tp-e2e-claude-code","private":true}' > "$BASE/claude-code/package.json"
  (cd "$BASE/claude-code" &&
    PATH="$BASE/node/node_modules/.bin:$PATH" npm install --no-audit --no-fund "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION")
  "$CLAUDE_BIN" --version
}

T0=$(date +%s.%N)
step node         install_node
step openclaw     install_openclaw
step wrapper      install_wrapper
step ngircd       install_ngircd
step irc-plugin   make_state_template
if [ "$MATRIX" != 0 ]; then
  step synapse       install_synapse
  step matrix-plugin make_matrix_template
fi
if [ "$CLAUDE" != 0 ]; then
  step claude-code install_claude_code
fi
printf '== all done in %.1fs\n' "$(echo "$(date +%s.%N) - $T0" | bc)"
echo "node:     $NODE_BIN ($("$NODE_BIN" -v))"
echo "openclaw: $OPENCLAW_MJS (wrapper $BASE/bin/openclaw)"
echo "template: $TEMPLATE"
if [ "$MATRIX" != 0 ]; then
  echo "matrix:   $MATRIX_TEMPLATE, synapse in $SYNAPSE_VENV"
fi
if [ "$CLAUDE" != 0 ]; then
  echo "claude:   $CLAUDE_BIN"
fi
