#!/usr/bin/env bash
# A real, single-node SLURM with accounting (munge + MariaDB + slurmdbd + slurmctld + slurmd) on a
# Debian-like machine without systemd, for CI and for trying the SLURM profile on one machine.
#
#   scripts/slurm_single_node.sh start    install what is missing, start every daemon, wait until
#                                         the controller, the node and accounting answer; prints
#                                         `export MRDFLOW_SLURM_PARTITION=...` and
#                                         `export MRDFLOW_SLURM_ACCOUNT=...` on stdout
#   scripts/slurm_single_node.sh stop     stop the daemons this script started (reverse order)
#   scripts/slurm_single_node.sh status   report the daemons; exit 0 only when all of them answer
#
# Typical use:  env_lines=$(scripts/slurm_single_node.sh start) && eval "$env_lines"
#
# Settings (environment): MRDFLOW_SLURM_DIR (scratch folder: state, spool, logs, pid files;
# default /tmp/mrdflow-slurm), MRDFLOW_SLURM_CLUSTER (mrdflow), MRDFLOW_SLURM_PARTITION (debug),
# MRDFLOW_SLURM_ACCOUNT (mrdflow), MRDFLOW_SLURM_WAIT (seconds to wait for each daemon, 60).
# Writes /etc/slurm/slurm.conf and /etc/slurm/slurmdbd.conf, and refuses to overwrite files there
# that it did not write. Needs root: re-runs itself through `sudo -n` otherwise.
set -euo pipefail

SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
DIR=${MRDFLOW_SLURM_DIR:-/tmp/mrdflow-slurm}
CLUSTER=${MRDFLOW_SLURM_CLUSTER:-mrdflow}
PARTITION=${MRDFLOW_SLURM_PARTITION:-debug}
ACCOUNT=${MRDFLOW_SLURM_ACCOUNT:-mrdflow}
WAIT=${MRDFLOW_SLURM_WAIT:-60}
ETC=/etc/slurm
MARK="# written by mrdflow scripts/slurm_single_node.sh"
PACKAGES=(munge mariadb-server slurmctld slurmd slurm-client slurmdbd)
# daemon name -> the command name in /proc/<pid>/comm (guards against a recycled pid)
declare -A COMM=([munged]=munged [mariadbd]=mariadbd [slurmdbd]=slurmdbd [slurmctld]=slurmctld [slurmd]=slurmd)

say() { echo "slurm_single_node: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# Print the last lines of a log and fail.
die_with_log() {
  local what=$1 log=$2
  say "ERROR: $what"
  if [ -r "$log" ]; then
    say "---- last lines of $log ----"
    tail -n 40 "$log" >&2 || true
    say "----"
  else
    say "(no log at $log)"
  fi
  exit 1
}

need_root() {
  [ "$(id -u)" -eq 0 ] && return 0
  command -v sudo >/dev/null 2>&1 || die "not root and sudo is unavailable"
  say "not root: re-running through sudo -n"
  exec sudo -n env \
    MRDFLOW_SLURM_DIR="$DIR" MRDFLOW_SLURM_CLUSTER="$CLUSTER" MRDFLOW_SLURM_PARTITION="$PARTITION" \
    MRDFLOW_SLURM_ACCOUNT="$ACCOUNT" MRDFLOW_SLURM_WAIT="$WAIT" MRDFLOW_SLURM_INVOKER="$(id -un)" \
    PATH="$PATH" bash "$SELF" "$@"
}

# pid recorded for a daemon, if that process is alive and is the daemon.
live_pid() {
  local name=$1 pidfile="$DIR/run/$1.pid" pid
  [ -r "$pidfile" ] || return 1
  pid=$(tr -dc '0-9' <"$pidfile")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
  [ "$(cat "/proc/$pid/comm")" = "${COMM[$name]}" ] || return 1
  echo "$pid"
}

# Poll a command until it succeeds or WAIT seconds pass.
wait_for() {
  local seconds=$1; shift
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

install_packages() {
  local missing=()
  command -v munged >/dev/null 2>&1 || missing+=(munge)
  command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server)
  command -v slurmctld >/dev/null 2>&1 || missing+=(slurmctld)
  command -v slurmd >/dev/null 2>&1 || missing+=(slurmd)
  command -v sbatch >/dev/null 2>&1 && command -v sacct >/dev/null 2>&1 || missing+=(slurm-client)
  command -v slurmdbd >/dev/null 2>&1 || missing+=(slurmdbd)
  [ "${#missing[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and apt-get is unavailable"
  say "installing ${PACKAGES[*]} (missing: ${missing[*]})"
  local log="$DIR/log/apt.log"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${PACKAGES[@]}"; } >"$log" 2>&1; then
    die_with_log "apt-get could not install ${PACKAGES[*]}" "$log"
  fi
}

# Refuse to replace a SLURM configuration this script did not write.
check_ours() {
  local f=$1
  if [ -e "$f" ] && ! grep -qF "$MARK" "$f"; then
    die "$f exists and was not written by this script; move it away first (this machine may have a real SLURM)"
  fi
}

write_configs() {
  local host node_line mem cpus
  host=$(hostname -s)
  check_ours "$ETC/slurm.conf"
  check_ours "$ETC/slurmdbd.conf"
  mkdir -p "$ETC"
  # The node's CPUs and memory as slurmd itself sees them (a mismatch drains the node).
  node_line=$(slurmd -C 2>/dev/null | head -n 1 || true)
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
  [ -n "$mem" ] || mem=$(free -m | awk '/^Mem:/ {print $2}')
  cpus=$(nproc)
  cat >"$DIR/slurm.conf.new" <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MailProg=/bin/true
MinJobAge=300
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  install -m 644 "$DIR/slurm.conf.new" "$ETC/slurm.conf"
  rm -f "$DIR/slurm.conf.new"
  # slurmdbd refuses a readable-by-others file (it holds the database password)
  umask 077
  cat >"$DIR/slurmdbd.conf.new" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$DB_PASS
EOF
  install -m 600 "$DIR/slurmdbd.conf.new" "$ETC/slurmdbd.conf"
  rm -f "$DIR/slurmdbd.conf.new"
  umask 022
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  if munge_ok; then
    say "munged answers already"
    return 0
  fi
  [ -s /etc/munge/munge.key ] || {
    say "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null 2>&1; then mungekey --create --force >/dev/null 2>&1 || true; fi
    [ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  }
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 755 /run/munge
  runuser -u munge -- /usr/sbin/munged >"$DIR/log/munged.start.log" 2>&1 \
    || die_with_log "munged did not start" /var/log/munge/munged.log
  wait_for "$WAIT" munge_ok || die_with_log "munge -n | unmunge fails after ${WAIT}s" /var/log/munge/munged.log
  # ours to stop later (a munged that ran before this script is left alone)
  cp /run/munge/munged.pid "$DIR/run/munged.pid"
}

db_ok() { mariadb-admin --protocol=socket ping >/dev/null 2>&1; }

start_mariadb() {
  if db_ok; then
    say "MariaDB answers already"
  else
    [ -d /var/lib/mysql/mysql ] || {
      say "initialising /var/lib/mysql"
      mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$DIR/log/mariadb-install.log" 2>&1 \
        || die_with_log "mariadb-install-db failed" "$DIR/log/mariadb-install.log"
    }
    mkdir -p /run/mysqld
    chown mysql:mysql /run/mysqld
    touch "$DIR/log/mariadb.log"
    chown mysql:mysql "$DIR/log/mariadb.log"
    rm -f /run/mysqld/mysqld.pid
    setsid /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid \
      --log-error="$DIR/log/mariadb.log" </dev/null >/dev/null 2>&1 &
    wait_for "$WAIT" db_ok || die_with_log "MariaDB does not answer after ${WAIT}s" "$DIR/log/mariadb.log"
    wait_for 10 test -s /run/mysqld/mysqld.pid || die_with_log "MariaDB wrote no pid file" "$DIR/log/mariadb.log"
    # ours to stop later (a MariaDB that ran before this script is left alone)
    cp /run/mysqld/mysqld.pid "$DIR/run/mariadbd.pid"
  fi
  # A database and a user for slurmdbd (the password is kept in slurmdbd.conf, mode 600).
  mariadb --protocol=socket <<EOF || die "could not create the accounting database in MariaDB"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

# Start daemon $1 unless it runs already (its own pid file says so); it daemonizes itself.
launch() {
  local d=$1
  if live_pid "$d" >/dev/null; then
    say "$d runs already (pid $(live_pid "$d"))"
  else
    "$d" >"$DIR/log/$d.start.log" 2>&1 || die_with_log "$d did not start" "$DIR/log/$d.log"
  fi
}

dbd_ok() { sacctmgr -n -P list cluster format=cluster >/dev/null 2>&1; }

start_slurmdbd() {
  launch slurmdbd
  if ! wait_for "$WAIT" dbd_ok; then
    say "sacctmgr says: $(sacctmgr -n list cluster 2>&1 | tail -n 3)"
    die_with_log "sacctmgr gets no answer from slurmdbd after ${WAIT}s" "$DIR/log/slurmdbd.log"
  fi
}

# Cluster, account and users in the accounting database (before slurmctld registers).
register_accounting() {
  local users=(root) u
  [ -n "${MRDFLOW_SLURM_INVOKER:-}" ] && [ "$MRDFLOW_SLURM_INVOKER" != root ] && users+=("$MRDFLOW_SLURM_INVOKER")
  [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && users+=("$SUDO_USER")
  sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" \
    || sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr could not add cluster $CLUSTER"
  sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT" \
    || sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description=mrdflow Organization=mrdflow >/dev/null \
    || die "sacctmgr could not add account $ACCOUNT"
  for u in "${users[@]}"; do
    sacctmgr -n -P list assoc where user="$u" account="$ACCOUNT" cluster="$CLUSTER" format=user | grep -qx "$u" \
      || sacctmgr -i add user "$u" Account="$ACCOUNT" DefaultAccount="$ACCOUNT" Cluster="$CLUSTER" >/dev/null \
      || die "sacctmgr could not add user $u to account $ACCOUNT"
  done
}

ctld_ok() { scontrol ping 2>/dev/null | grep -q "is UP"; }

node_state() { sinfo -h -N -n "$(hostname -s)" -o %T 2>/dev/null | head -n 1; }

node_idle() { case "$(node_state)" in idle | mixed | allocated) return 0 ;; *) return 1 ;; esac; }

start_slurmctld() {
  launch slurmctld
  if ! wait_for "$WAIT" ctld_ok; then
    say "scontrol ping says: $(scontrol ping 2>&1 | head -n 3)"
    die_with_log "scontrol ping: the controller is not UP after ${WAIT}s" "$DIR/log/slurmctld.log"
  fi
}

start_slurmd() {
  launch slurmd
  local deadline=$((SECONDS + WAIT)) state
  until node_idle; do
    state=$(node_state)
    case "$state" in
      *drain* | down* | *fail*)
        scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    if [ "$SECONDS" -ge "$deadline" ]; then
      sinfo -N -l >&2 || true
      scontrol show node "$(hostname -s)" >&2 || true
      die_with_log "node $(hostname -s) is '${state:-unknown}', not idle, after ${WAIT}s" "$DIR/log/slurmd.log"
    fi
    sleep 0.5
  done
}

cmd_start() {
  local v
  for v in "$CLUSTER" "$PARTITION" "$ACCOUNT"; do
    [[ $v =~ ^[A-Za-z0-9_.-]+$ ]] || die "cluster, partition and account names take letters, digits, _ . - only: '$v'"
  done
  need_root start
  mkdir -p "$DIR/run" "$DIR/log" "$DIR/state" "$DIR/spool"
  chmod 755 "$DIR"
  install_packages
  # the database password: kept from an earlier start (slurmdbd may be running with it), else new
  DB_PASS=""
  if [ -r "$ETC/slurmdbd.conf" ] && grep -qF "$MARK" "$ETC/slurmdbd.conf"; then
    DB_PASS=$(sed -n 's/^StoragePass=//p' "$ETC/slurmdbd.conf")
  fi
  [ -n "$DB_PASS" ] || DB_PASS=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
  write_configs
  local t0=$SECONDS
  start_munge
  start_mariadb
  start_slurmdbd
  register_accounting
  start_slurmctld
  start_slurmd
  wait_for "$WAIT" dbd_ok || die_with_log "sacctmgr stopped answering" "$DIR/log/slurmdbd.log"
  say "up in $((SECONDS - t0)) s: cluster $CLUSTER, node $(hostname -s) $(node_state), partition $PARTITION, account $ACCOUNT"
  say "logs and state in $DIR; stop with: $SELF stop"
  echo "export MRDFLOW_SLURM_PARTITION=$PARTITION"
  echo "export MRDFLOW_SLURM_ACCOUNT=$ACCOUNT"
}

# Stop one daemon by its pid file: TERM, wait up to 20 s, then KILL.
stop_one() {
  local name=$1 pid i
  if ! pid=$(live_pid "$name"); then
    rm -f "$DIR/run/$name.pid"
    return 0
  fi
  say "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 40); do
    [ -d "/proc/$pid" ] || break
    sleep 0.5
  done
  if [ -d "/proc/$pid" ]; then
    say "$name did not stop in 20 s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$DIR/run/$name.pid"
}

cmd_stop() {
  if [ ! -d "$DIR/run" ]; then
    say "nothing to stop ($DIR/run does not exist)"
    return 0
  fi
  need_root stop
  local name
  for name in slurmd slurmctld slurmdbd mariadbd munged; do
    stop_one "$name"
  done
  say "stopped"
}

cmd_status() {
  local rc=0 name pid
  for name in munged mariadbd slurmdbd slurmctld slurmd; do
    if pid=$(live_pid "$name"); then
      echo "$name: running (pid $pid)"
    else
      echo "$name: not started by this script"
    fi
  done
  if command -v scontrol >/dev/null 2>&1 && ctld_ok; then
    echo "controller: UP"
    echo "node: $(node_state)"
    node_idle || rc=1
  else
    echo "controller: not answering"
    rc=1
  fi
  if command -v sacctmgr >/dev/null 2>&1 && dbd_ok; then
    echo "accounting: answering"
  else
    echo "accounting: not answering"
    rc=1
  fi
  return "$rc"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
