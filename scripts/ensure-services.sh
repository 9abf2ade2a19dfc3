#!/usr/bin/env bash
# Make sure PostgreSQL and RabbitMQ are up on 127.0.0.1 with the contract's local defaults
# (PostgreSQL user postgres with trust auth on the loopback, RabbitMQ guest/guest), installing
# them from Debian's packages when missing, plus what `make test` needs around them (python3
# with venv, pg_dump, rabbitmqctl). Idempotent; safe to run before every `make test` / `make demo`.
# Services already reachable (say, from Docker) are used as they are.
set -euo pipefail

log() { echo "ensure-services: $*" >&2; }
need_root() { [ "$(id -u)" = 0 ] || { log "run as root to install $1"; exit 1; }; }
apt_updated=0
apt_install() {
  need_root "$*"
  if [ $apt_updated = 0 ]; then apt-get update -qq; apt_updated=1; fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pg_up() { port_open 5432 && { ! command -v pg_isready >/dev/null 2>&1 || pg_isready -q -h 127.0.0.1 -p 5432; }; }
rabbit_up() { port_open 5672; }
wait_for() {  # wait_for <seconds> <check>: poll a condition instead of sleeping for luck
  local seconds=$1; shift
  for _ in $(seq 1 "$seconds"); do "$@" && return 0; sleep 1; done
  "$@"
}

# Python 3 with venv and pip (Debian ships venv separately).
command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv

# PostgreSQL -------------------------------------------------------------------------------
if ! pg_up && ! command -v pg_ctlcluster >/dev/null 2>&1; then
  apt_install postgresql
fi
command -v pg_dump >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_dump >/dev/null 2>&1 \
  || apt_install postgresql-client

# A local Debian cluster: make sure the loopback trusts user postgres (the contract's default
# DATABASE_URL has no password), then start it, or reload it if the rule was just added.
if [ -d /etc/postgresql ] && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  changed=0
  if [ -f "$hba" ] && ! grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
    need_root "the PostgreSQL trust rule"
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    changed=1
  fi
  if ! pg_up; then
    log "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  elif [ $changed = 1 ]; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
  fi
fi
wait_for 60 pg_up || { log "PostgreSQL did not start on 127.0.0.1:5432"; exit 1; }

# RabbitMQ ---------------------------------------------------------------------------------
# rabbitmqctl is needed even for a broker that is already up: the tests create a vhost per run.
command -v rabbitmqctl >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmqctl ] || apt_install rabbitmq-server
if ! rabbit_up; then
  log "starting RabbitMQ"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  rabbitmqctl -q await_startup --timeout 120 >/dev/null 2>&1 || true
  wait_for 120 rabbit_up || { log "RabbitMQ did not start on 127.0.0.1:5672"; exit 1; }
fi
rabbitmqctl -q await_startup --timeout 120 >/dev/null 2>&1 || true
# promtool (Debian's prometheus package) checks the alert rules in tests/unit/test_dashboard_alerts.py.
command -v promtool >/dev/null 2>&1 || apt_install prometheus
log "PostgreSQL and RabbitMQ are up"
