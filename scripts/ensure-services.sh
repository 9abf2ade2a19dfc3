#!/usr/bin/env bash
# Make sure PostgreSQL and RabbitMQ are up on 127.0.0.1, installing them from Debian's
# packages when missing. Idempotent; safe to run before every `make test` / `make demo`.
set -euo pipefail

need_root() { [ "$(id -u)" = 0 ] || { echo "ensure-services: run as root to install $1" >&2; exit 1; }; }
apt_updated=0
apt_install() {
  need_root "$*"
  if [ $apt_updated = 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
rabbit_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

# Python's venv module (Debian ships it separately).
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv python3-dev

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "ensure-services: installing PostgreSQL" >&2
  apt_install postgresql
fi
if ! pg_up; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  # The contract's local default: user postgres, trust auth on the loopback.
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do pg_up && break; sleep 1; done
  pg_up || { echo "ensure-services: PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
fi

if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "ensure-services: installing RabbitMQ" >&2
  apt_install rabbitmq-server
fi
if ! rabbit_up; then
  rabbitmq-server -detached || true
  rabbitmqctl -q await_startup --timeout 120 >/dev/null 2>&1 || true
  for _ in $(seq 1 120); do rabbit_up && break; sleep 1; done
  rabbit_up || { echo "ensure-services: RabbitMQ did not start on 127.0.0.1:5672" >&2; exit 1; }
fi
rabbitmqctl -q await_startup --timeout 120 >/dev/null 2>&1 || true
echo "ensure-services: PostgreSQL and RabbitMQ are up" >&2
