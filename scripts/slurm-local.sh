#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, to try `kdclaims train --executor slurm` (and to test it).
#
#   sudo scripts/slurm-local.sh start [DIR]    # then: export SLURM_CONF=DIR/slurm.conf
#   sudo scripts/slurm-local.sh stop  [DIR]
#
# Needs root and Debian's packages: apt-get install -y slurm-wlm munge slurmdbd mariadb-server
# Everything but munged's socket (Debian's default path) lives under DIR (default /run/kdclaims-slurm): munge key and socket, a MariaDB data directory,
# slurm.conf, logs, state, and one PID file per daemon (stop kills exactly those PIDs).
# Why each piece: submitit reads job states only from `sacct`, so accounting (slurmdbd + MariaDB) must run;
# no cgroups (proctrack/linuxproc, task/none) so it runs in containers; batch_sched_delay=0 so a job starts
# at once instead of after ~3 s. Ports: slurmctld 16817, slurmd 16818, slurmdbd 16819, MariaDB 13306.
set -euo pipefail

cmd=${1:-}
D=${2:-${KDCLAIMS_SLURM_DIR:-/run/kdclaims-slurm}}
SOCK=/run/munge/munge.socket.2
DAEMONS="slurmd slurmctld slurmdbd mariadbd munged"   # stop order

die() { echo "slurm-local: $*" >&2; exit 1; }

need() {
  [ "$(id -u)" = 0 ] || die "run as root (the daemons switch to their own users)"
  for b in munged slurmctld slurmd slurmdbd mariadbd mariadb-install-db sacctmgr sinfo setpriv; do
    command -v "$b" >/dev/null || die "$b not found; install: apt-get install -y slurm-wlm munge slurmdbd mariadb-server"
  done
}

# run "$@" in the background as user $1 (setpriv execs: the recorded PID is the daemon's own)
launch() {
  local name=$1 user=$2; shift 2
  if [ "$user" = root ]; then "$@" >>"$D/$name.out" 2>&1 & else
    setpriv --reuid="$user" --regid="$user" --init-groups "$@" >>"$D/$name.out" 2>&1 & fi
  echo $! >"$D/$name.pid"
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local t=$1 what=$2; shift 2
  for _ in $(seq $((t * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "$what did not come up in ${t}s; see $D/*.log and $D/*.out"
}

start_munge() {
  mkdir -p "$D/munge"; chown munge:munge "$D/munge"; chmod 755 "$D/munge"  # clients need to reach the socket
  [ -f "$D/munge/munge.key" ] || { dd if=/dev/urandom of="$D/munge/munge.key" bs=1024 count=1 status=none
    chown munge:munge "$D/munge/munge.key"; chmod 400 "$D/munge/munge.key"; }
  # the default socket: SLURM's clients (sacct, sacctmgr) reach munged only there, whatever AuthInfo says
  if [ -S "$SOCK" ] && munge -S "$SOCK" -n >/dev/null 2>&1; then
    echo "slurm-local: using the munged already serving $SOCK"; return; fi
  mkdir -p "$(dirname "$SOCK")"; chown munge:munge "$(dirname "$SOCK")"; chmod 755 "$(dirname "$SOCK")"
  launch munged munge munged -F --key-file="$D/munge/munge.key" --socket="$SOCK" \
    --pid-file="$D/munge/munged.pid" --log-file="$D/munge/munged.log" --seed-file="$D/munge/munged.seed"
  wait_for 10 munged munge -S "$SOCK" -n
}

start_mariadb() {
  mkdir -p "$D/mysql"; chown mysql:mysql "$D/mysql"
  [ -d "$D/mysql/mysql" ] || mariadb-install-db --user=mysql --datadir="$D/mysql" \
    --auth-root-authentication-method=socket >"$D/mariadb-install.out" 2>&1
  launch mariadbd mysql mariadbd --no-defaults --datadir="$D/mysql" --socket="$D/mysql/mysql.sock" \
    --pid-file="$D/mysql/mysql.pid" --bind-address=127.0.0.1 --port=13306 --log-error="$D/mysql/mariadb.log"
  wait_for 30 mariadbd mariadb --no-defaults --socket="$D/mysql/mysql.sock" -u root -e "select 1"
  mariadb --no-defaults --socket="$D/mysql/mysql.sock" -u root -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'kdclaims';
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'kdclaims';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

write_confs() {
  local host node
  host=$(hostname -s)
  node=$(slurmd -C | head -1 | sed "s/^NodeName=[^ ]*/NodeName=$host/")
  mkdir -p "$D/state" "$D/spool"
  cat >"$D/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=16819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=13306
StorageUser=slurm
StoragePass=kdclaims
StorageLoc=slurm_acct_db
PidFile=$D/slurmdbd.pidfile
LogFile=$D/slurmdbd.log
EOF
  chmod 600 "$D/slurmdbd.conf"
  cat >"$D/slurm.conf" <<EOF
ClusterName=kdclaims
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pidfile
SlurmdPidFile=$D/slurmd.pidfile
SlurmctldLogFile=$D/slurmctld.log
SlurmdLogFile=$D/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=16819
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  need
  mkdir -p "$D"; chmod 755 "$D"
  for d in $DAEMONS; do
    if [ -f "$D/$d.pid" ] && kill -0 "$(cat "$D/$d.pid")" 2>/dev/null; then die "already running ($d); stop first"; fi
  done
  export SLURM_CONF=$D/slurm.conf
  start_munge
  start_mariadb
  write_confs
  launch slurmdbd root slurmdbd -D  # reads slurmdbd.conf beside $SLURM_CONF
  wait_for 30 slurmdbd sacctmgr -n list cluster
  sacctmgr -i add cluster kdclaims >/dev/null 2>&1 || true
  launch slurmctld root slurmctld -D -i -f "$D/slurm.conf"
  launch slurmd root slurmd -D -f "$D/slurm.conf" -N "$(hostname -s)"
  wait_for 60 "the node" bash -c "sinfo -h -o %t | grep -qx idle"
  echo "slurm-local: up; export SLURM_CONF=$D/slurm.conf"
}

stop() {
  local pid any=0
  for d in $DAEMONS; do
    [ -f "$D/$d.pid" ] || continue
    pid=$(cat "$D/$d.pid"); rm -f "$D/$d.pid"
    kill -0 "$pid" 2>/dev/null || continue
    any=1; kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" || true
  done
  [ $any = 1 ] && echo "slurm-local: stopped" || echo "slurm-local: nothing running under $D"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop [DIR]" ;;
esac
