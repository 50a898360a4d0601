#!/usr/bin/env bash
# Put axis-relay on a gateway (Debian 12, Raspberry Pi OS, Ubuntu), idempotently:
#   sudo ./install.sh                      install, or upgrade to this checkout
#   sudo ./install.sh --uninstall          remove the program and its unit; keep the
#                                          config (/etc/axis-relay) and the spool
#   sudo ./install.sh --uninstall --purge  remove those too, and the system user it made
#   sudo ./install.sh --dry-run            print what it would do, change nothing
#   DESTDIR=/scratch ./install.sh          into a scratch root, which may be empty
#                                          (nothing started; the user goes into
#                                          $DESTDIR/etc/passwd, made if missing)
# What it does: the system user axis-relay; a virtualenv in /opt/axis-relay from the
# lock file (requirements/run.lock, hashes checked), with /usr/local/bin/axis-relay
# linked to it; /etc/axis-relay/relay.toml from the example, only if there is none; a
# local CA and server certificate for this machine's names and LAN addresses, only if
# there is none; the systemd unit, enabled, and started only once
# 'axis-relay check-config' passes (the example's placeholders never go live).
set -euo pipefail
cd "$(dirname "$0")"

DESTDIR="${DESTDIR:-}"
PYTHON="${PYTHON:-python3}"
NAME=axis-relay
PREFIX="$DESTDIR/opt/axis-relay"
ETC="$DESTDIR/etc/axis-relay"
STATE="$DESTDIR/var/lib/axis-relay"
UNITS="$DESTDIR/etc/systemd/system"
BIN="$DESTDIR/usr/local/bin"
COMPLETIONS="$DESTDIR/usr/share/bash-completion/completions"
# Written when this installer made the system user, so --purge removes only its own.
MADE_USER="$STATE/.user-made-by-install.sh"

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }
# systemctl only for a real install on a machine that runs systemd.
systemd_here() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; }

action=install
purge=0
dry_run=0
for arg in "$@"; do
  case "$arg" in
    --uninstall) action=uninstall ;;
    --purge) purge=1 ;;
    --dry-run) dry_run=1 ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) die "unknown option '$arg' (see --help)" ;;
  esac
done
[ "$purge" = 0 ] || [ "$action" = uninstall ] || die "--purge goes with --uninstall"

user_ids() {
  [ -e "$DESTDIR/etc/passwd" ] || return 0
  awk -F: -v u="$NAME" '$1 == u { print $3 ":" $4 }' "$DESTDIR/etc/passwd"
}

# What a run would do, from what is there now; nothing is changed.
plan() {
  local would="install.sh --dry-run: would"
  if [ "$action" = uninstall ]; then
    echo "$would stop and disable $NAME.service (if systemd runs), remove $UNITS/$NAME.service"
    echo "$would remove $PREFIX, $BIN/axis-relay and its bash completion"
    if [ "$purge" = 1 ]; then
      echo "$would remove $ETC (config, certificates) and $STATE (spool, ledger)"
      if [ -e "$MADE_USER" ]; then echo "$would remove the system user $NAME (this installer made it)"; fi
    else
      echo "$would keep $ETC and $STATE"
    fi
    return
  fi
  if [ -n "$(user_ids)" ]; then echo "$would keep the system user $NAME"; else echo "$would create the system user $NAME"; fi
  echo "$would install this checkout into $PREFIX (a virtualenv from requirements/run.lock), link $BIN/axis-relay and add bash completion"
  if [ -e "$ETC/relay.toml" ]; then echo "$would keep $ETC/relay.toml"; else
    echo "$would write $ETC/relay.toml from the example"; fi
  if [ -e "$ETC/tls/relay.crt" ]; then echo "$would keep the certificate in $ETC/tls"; else
    echo "$would make a local CA and a certificate in $ETC/tls"; fi
  echo "$would create $STATE (the spool) and install $UNITS/$NAME.service"
  if systemd_here; then
    echo "$would enable $NAME.service, and start it only if 'axis-relay check-config' passes"
  else
    echo "$would start nothing (systemd does not run here)"
  fi
}

if [ "$dry_run" = 1 ]; then
  plan
  exit 0
fi
[ "$(id -u)" = 0 ] || die "run it as root: sudo $0 $*"

uninstall() {
  if systemd_here; then
    systemctl disable --now "$NAME.service" 2>/dev/null || true
  fi
  rm -f "$UNITS/$NAME.service"
  if systemd_here; then systemctl daemon-reload; fi
  rm -rf "$PREFIX"
  # The link only if it is ours (points into $PREFIX): never another program's.
  if [ -L "$BIN/axis-relay" ] && [ "$(readlink "$BIN/axis-relay")" = "/opt/axis-relay/.venv/bin/axis-relay" ]; then
    rm -f "$BIN/axis-relay"
  fi
  rm -f "$COMPLETIONS/axis-relay"
  if [ "$purge" = 1 ]; then
    local made_user=0
    [ -e "$MADE_USER" ] && made_user=1
    rm -rf "$ETC" "$STATE"
    if [ "$made_user" = 1 ] && [ -n "$(user_ids)" ]; then
      local where=()
      if [ -n "$DESTDIR" ]; then where=(--prefix "$DESTDIR"); fi
      userdel "${where[@]}" "$NAME"
      say "removed the system user $NAME"
    fi
    say "removed, with the config and the spool"
  else
    say "removed; kept $ETC (config, certificate) and $STATE (spool, ledger): --purge removes them"
  fi
}

ensure_user() {
  if [ -n "$DESTDIR" ]; then
    # An empty scratch root: the account files useradd --prefix writes into.
    install -d -m 755 "$DESTDIR/etc"
    for f in passwd group; do [ -e "$DESTDIR/etc/$f" ] || install -m 644 /dev/null "$DESTDIR/etc/$f"; done
    for f in shadow gshadow; do [ -e "$DESTDIR/etc/$f" ] || install -m 640 /dev/null "$DESTDIR/etc/$f"; done
  fi
  made=0
  if [ -z "$(user_ids)" ]; then
    local where=()
    if [ -n "$DESTDIR" ]; then where=(--prefix "$DESTDIR"); fi
    useradd "${where[@]}" --system --user-group --home-dir /var/lib/axis-relay --no-create-home \
      --shell /usr/sbin/nologin "$NAME"
    made=1
    say "system user $NAME created"
  fi
  ids="$(user_ids)"
  uid="${ids%%:*}"
  gid="${ids##*:}"
}

ensure_python() {
  if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    command -v apt-get >/dev/null || die "$PYTHON has no venv module; install it (Debian: python3-venv)"
    apt-get install -y -qq python3-venv
  fi
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "axis-relay needs Python 3.11 or newer; this is $("$PYTHON" --version)"
}

install_program() {
  # This checkout's files, replaced whole: what runs is what was installed.
  rm -rf "$PREFIX/src.new"
  mkdir -p "$PREFIX/src.new"
  cp -a relay pyproject.toml README.md LICENSE docs requirements config systemd "$PREFIX/src.new/"
  rm -rf "$PREFIX/src"
  mv "$PREFIX/src.new" "$PREFIX/src"
  [ -x "$PREFIX/.venv/bin/python" ] || "$PYTHON" -m venv "$PREFIX/.venv"
  local pip=("$PREFIX/.venv/bin/pip" --quiet --disable-pip-version-check)
  "${pip[@]}" install --require-hashes -r "$PREFIX/src/requirements/run.lock"
  "${pip[@]}" install --no-deps "$PREFIX/src"
  # pip builds in the tree it is given: leave no build/ or egg-info there.
  rm -rf "$PREFIX/src/build" "$PREFIX"/src/*.egg-info
  "$PREFIX/.venv/bin/pip" check >/dev/null
  # On the PATH, so the operator commands work as the README writes them.
  install -d -m 755 "$BIN"
  ln -sfn /opt/axis-relay/.venv/bin/axis-relay "$BIN/axis-relay"
  # Tab completion for the operator commands, made from the installed program's own parser.
  install -d -m 755 "$COMPLETIONS"
  "$PREFIX/.venv/bin/axis-relay" completion bash >"$COMPLETIONS/axis-relay"
  chmod 644 "$COMPLETIONS/axis-relay"
  say "program in $PREFIX ($("$PREFIX/.venv/bin/python" -c 'import importlib.metadata as m; print(m.version("axis-relay"))'))"
}

install_config() {
  install -d -m 750 -o root -g "$gid" "$ETC"
  if [ -e "$ETC/relay.toml" ]; then
    say "kept $ETC/relay.toml"
  else
    install -m 640 -o root -g "$gid" config/relay.example.toml "$ETC/relay.toml"
    say "wrote $ETC/relay.toml from the example: edit [s3] and [devices] for this site"
  fi
  if [ -e "$ETC/tls/relay.crt" ]; then
    say "kept the certificate in $ETC/tls"
  else
    local names
    # shellcheck disable=SC2207 # one word per name or address
    names=($(hostname) $(hostname).local $("$PREFIX/.venv/bin/python" -c \
      'from relay.dev.addresses import lan_addresses; print(" ".join(lan_addresses()))'))
    "$PREFIX/.venv/bin/axis-relay" gen-cert "${names[@]}" --dir "$ETC/tls" >/dev/null
    say "made a local CA and a certificate for ${names[*]} in $ETC/tls (install ca.crt on the cameras)"
  fi
  chown -R root:"$gid" "$ETC/tls"
  chmod 750 "$ETC/tls"
  chmod 640 "$ETC/tls/relay.key"  # the relay reads its key, never the CA's
  chmod 600 "$ETC/tls/ca.key"
  install -d -m 750 -o "$uid" -g "$gid" "$STATE"
  if [ "$made" = 1 ]; then touch "$MADE_USER"; fi
}

install_unit() {
  install -d -m 755 "$UNITS"
  install -m 644 systemd/axis-relay.service "$UNITS/$NAME.service"
  if ! systemd_here; then
    say "unit in $UNITS; systemd does not run here: start it with 'systemctl enable --now $NAME'"
    return
  fi
  systemctl daemon-reload
  if "$PREFIX/.venv/bin/axis-relay" check-config "$ETC/relay.toml"; then
    systemctl enable --now "$NAME.service"
    systemctl restart "$NAME.service"
    say "running: journalctl -u $NAME -f"
  else
    systemctl enable "$NAME.service"
    say "enabled, not started: fix $ETC/relay.toml (above), then 'systemctl start $NAME'"
  fi
}

next_steps() {
  cat <<STEPS
install.sh: next steps
  1. sudoedit /etc/axis-relay/relay.toml       # [s3] bucket, [devices]: names, tokens; ingest.public_url
  2. axis-relay check-config                   # names every placeholder and mistake left, with the fix
  3. sudo systemctl start $NAME && journalctl -u $NAME -f
  4. install /etc/axis-relay/tls/ca.crt on each camera, then: axis-relay camera setup <name>
  5. axis-relay status                         # ok, degraded or failing, each reason with its fix
STEPS
}

if [ "$action" = uninstall ]; then
  uninstall
  exit 0
fi
ensure_python
ensure_user
install_program
install_config
install_unit
next_steps
