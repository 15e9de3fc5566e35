#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, in one command (issue 25, point 1):
#   scripts/slurm-local.sh up       install what is missing, configure, start, wait until the node is idle
#   scripts/slurm-local.sh down     cancel the jobs, stop the daemons this script started (idempotent)
#   scripts/slurm-local.sh status   print sinfo; exit 0 when the cluster answers, 1 otherwise
#
# Made for a root shell in a container or VM without systemd (Debian 12: slurm-wlm 22.05 and
# munge from the distribution; no accounting database, no cgroups). It needs root (apt-get, the
# daemons run as root: SlurmUser=root).
#
# Settings (environment):
#   SLURM_LOCAL_DIR      the cluster's own folder (default /var/lib/spgnet-slurm)
#   SLURM_LOCAL_GPUS     fake GPUs (GRES gpu) of the node (default 2; 0: no GRES)
#   SLURM_LOCAL_TIMEOUT  seconds `up` waits for the node to become idle (default 60)
#
# Paths:
#   $SLURM_LOCAL_DIR/etc/slurm.conf, gres.conf, cgroup.conf   the configuration (written by every `up`)
#   $SLURM_LOCAL_DIR/state/       StateSaveLocation (slurmctld; jobs and job ids survive down/up)
#   $SLURM_LOCAL_DIR/spool/       SlurmdSpoolDir (slurmd)
#   $SLURM_LOCAL_DIR/log/         slurmctld.log, slurmd.log, munged.log
#   $SLURM_LOCAL_DIR/run/         slurmctld.pid, slurmd.pid, munged.pid (the daemons this script started)
#   $SLURM_LOCAL_DIR/.lock        flock: one up/down at a time
#   $SLURM_LOCAL_DIR/dev/gpuN     the fake GPU device files (character devices 1:3, i.e. like /dev/null)
#   /etc/slurm/slurm.conf, gres.conf, cgroup.conf   symbolic links to the files above, made when
#                                 absent (so sinfo, sbatch, squeue ... find the cluster without
#                                 SLURM_CONF); an existing non-link file there is left alone and
#                                 `up` says to export SLURM_CONF=$SLURM_LOCAL_DIR/etc/slurm.conf;
#                                 the links follow the latest `up` (another SLURM_LOCAL_DIR re-points them)
#   /etc/munge/munge.key          munge's key (created with mungekey when the package did not)
#   /run/munge/                   munged's socket (the default one, which slurm uses)
# A munged that already answers (munge -n | unmunge) is used as it is and never stopped by `down`.
# Progress goes to stderr; `up` prints one summary line on stdout.
set -euo pipefail

DIR="${SLURM_LOCAL_DIR:-/var/lib/spgnet-slurm}"
GPUS="${SLURM_LOCAL_GPUS:-2}"
TIMEOUT="${SLURM_LOCAL_TIMEOUT:-60}"
ETC="$DIR/etc"
CONF="$ETC/slurm.conf"
RUN="$DIR/run"
LOG="$DIR/log"
export PATH="/usr/sbin:/sbin:/usr/bin:/bin:$PATH"

say() { echo "slurm-local: $*" >&2; }
die() { echo "slurm-local: ERROR: $*" >&2; exit 1; }

# Client commands of this script use our configuration whatever /etc/slurm holds.
slurm_env() { SLURM_CONF="$CONF" "$@"; }

pid_alive() {  # pid_alive PIDFILE NAME: the pid file's process is alive and is NAME
  local file="$1" name="$2" pid
  [ -s "$file" ] || return 1
  pid="$(tr -dc '0-9' <"$file")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]
}

node_state() {  # the node's state as sinfo prints it (idle, mix, alloc, down*, inval ...), empty if no answer
  slurm_env timeout 10 sinfo -h -N -o '%t' 2>/dev/null | head -n1 || true
}

usable() {  # usable STATE: a node state that takes jobs and answers (idle, mix, alloc, comp; no '*')
  case "$1" in *'*'*) return 1 ;; idle*|mix*|alloc*|comp*) return 0 ;; *) return 1 ;; esac
}

cluster_up() {  # our slurmctld and slurmd run and the controller answers with a usable node
  pid_alive "$RUN/slurmctld.pid" slurmctld && pid_alive "$RUN/slurmd.pid" slurmd || return 1
  usable "$(node_state)"
}

munge_works() { timeout 10 munge -n 2>/dev/null | timeout 10 unmunge >/dev/null 2>&1; }

log_tails() {
  local f
  for f in "$LOG/slurmctld.log" "$LOG/slurmd.log" "$LOG/munged.log"; do
    [ -s "$f" ] || continue
    echo "----- tail of $f" >&2
    tail -n 20 "$f" >&2
  done
}

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  command -v munged >/dev/null || missing+=(munge)
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || die "not root: cannot install ${missing[*]} (apt-get install slurm-wlm munge)"
  command -v apt-get >/dev/null || die "no apt-get: install slurm-wlm and munge (slurmctld, slurmd, munged) by hand"
  say "installing slurm-wlm munge (missing: ${missing[*]})"
  # No service starts from the maintainer scripts (no systemd here; this script starts the
  # daemons): a temporary policy-rc.d that forbids them, unless the machine has its own.
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
  fi
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0 install --no-install-recommends slurm-wlm munge)
  if ! "${apt[@]}" >&2; then
    say "apt-get install failed; apt-get update and again"
    apt-get -q update >&2 && "${apt[@]}" >&2 || { [ $own_policy -eq 0 ] || rm -f "$policy"; die "apt-get install slurm-wlm munge failed"; }
  fi
  [ $own_policy -eq 0 ] || rm -f "$policy"
}

start_munge() {
  if munge_works; then
    if pid_alive "$RUN/munged.pid" munged; then say "munged (ours) runs"; else say "munged already runs (not ours; left alone)"; fi
    return 0
  fi
  rm -f "$RUN/munged.pid"
  if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key >&2
    else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
  fi
  local user=root
  id munge >/dev/null 2>&1 && user=munge
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown "$user" /run/munge /var/log/munge /var/lib/munge /etc/munge /etc/munge/munge.key
  chmod 0700 /etc/munge /var/log/munge /var/lib/munge; chmod 0755 /run/munge; chmod 0600 /etc/munge/munge.key
  say "starting munged (as $user)"
  # A stale socket of a dead munged makes munged refuse to start; --force removes it.
  if [ "$user" = root ]; then
    munged --force --pid-file="$RUN/munged.pid" --log-file="$LOG/munged.log" >&2 9>&-
  else
    touch "$LOG/munged.log" && chown munge "$LOG/munged.log"
    runuser -u munge -- munged --force --pid-file=/run/munge/munged.pid --log-file="$LOG/munged.log" >&2 9>&-
    cp /run/munge/munged.pid "$RUN/munged.pid"
  fi
  local i
  for i in $(seq 50); do munge_works && return 0; sleep 0.2; done
  log_tails; die "munged does not answer (munge -n | unmunge)"
}

write_config() {
  local host cpus_line mem_total real_mem cpus def_mem gres_node="" i
  host="$(hostname -s)"
  # The node's CPU layout as slurmd itself sees it (a different layout in slurm.conf makes the node INVALID).
  cpus_line="$(slurmd -C 2>/dev/null | head -n1)"
  cpus_line="$(grep -o -E '(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+' <<<"$cpus_line" | tr '\n' ' ')"
  cpus="$(grep -o -E 'CPUs=[0-9]+' <<<"$cpus_line" | cut -d= -f2 || true)"
  [ -n "$cpus" ] || { cpus="$(nproc)"; cpus_line="CPUs=$cpus"; }
  mem_total="$(free -m | awk '/^Mem:/ {print $2}')"
  real_mem=$(( mem_total * 97 / 100 ))      # slightly below the total: slurmd finds a bit less at times
  def_mem=$(( real_mem / cpus ))             # a job without --mem gets its CPUs' share, not the whole node
  mkdir -p "$ETC" "$DIR/state" "$DIR/spool" "$LOG" "$RUN" "$DIR/dev"
  chmod 0755 "$DIR" "$ETC"
  if [ "$GPUS" -gt 0 ]; then
    gres_node=" Gres=gpu:$GPUS"
    for i in $(seq 0 $((GPUS - 1))); do
      [ -c "$DIR/dev/gpu$i" ] || { rm -f "$DIR/dev/gpu$i"; mknod "$DIR/dev/gpu$i" c 1 3; }
    done
  fi
  cat >"$CONF.tmp" <<EOF
# Written by scripts/slurm-local.sh: a one-node cluster on $host (rewritten by every \`up\`).
ClusterName=spgnet-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
MailProg=/bin/true
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a container: processes tracked through /proc, no task binding or confinement.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$def_mem
GresTypes=gpu
ReturnToService=2
# Finished jobs stay visible to squeue for 10 minutes (status checks read their final state there).
MinJobAge=600
KillWait=10
InactiveLimit=0
SlurmctldTimeout=120
SlurmdTimeout=300
NodeName=$host NodeAddr=127.0.0.1 ${cpus_line}RealMemory=$real_mem$gres_node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
  {
    echo "# Written by scripts/slurm-local.sh: fake GPUs (character devices like /dev/null), no autodetection."
    echo "AutoDetect=off"
    if [ "$GPUS" -gt 0 ]; then
      if [ "$GPUS" -eq 1 ]; then echo "NodeName=$host Name=gpu File=$DIR/dev/gpu0"
      else echo "NodeName=$host Name=gpu File=$DIR/dev/gpu[0-$((GPUS - 1))]"; fi
    fi
  } >"$ETC/gres.conf"
  cat >"$ETC/cgroup.conf" <<EOF
# Written by scripts/slurm-local.sh: no cgroup plugin is in use (proctrack/linuxproc, task/none).
CgroupPlugin=autodetect
EOF
  # Client commands look in /etc/slurm: link our files there unless the machine has its own.
  mkdir -p /etc/slurm
  local f link_ok=1
  for f in slurm.conf gres.conf cgroup.conf; do
    if [ -L "/etc/slurm/$f" ] || [ ! -e "/etc/slurm/$f" ]; then
      ln -sfn "$ETC/$f" "/etc/slurm/$f"
    else
      link_ok=0
    fi
  done
  [ $link_ok -eq 1 ] || say "/etc/slurm has configuration files of its own (left alone): export SLURM_CONF=$CONF"
}

stop_pid() {  # stop_pid PIDFILE NAME: TERM, then KILL after 10 s; remove the pid file
  local file="$1" name="$2" pid i
  if pid_alive "$file" "$name"; then
    pid="$(tr -dc '0-9' <"$file")"
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name (pid $pid) still runs after 10 s: KILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
  fi
  rm -f "$file"
}

cmd_down() {
  if pid_alive "$RUN/slurmctld.pid" slurmctld; then
    local jobs
    jobs="$(slurm_env timeout 10 squeue -h -t PENDING,RUNNING,SUSPENDED,CONFIGURING,COMPLETING -o '%A' 2>/dev/null | tr '\n' ' ' || true)"
    if [ -n "${jobs// /}" ]; then
      say "cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      slurm_env timeout 10 scancel $jobs 2>/dev/null || true
      local i
      for i in $(seq 30); do
        [ -z "$(slurm_env timeout 10 squeue -h -t PENDING,RUNNING,SUSPENDED,CONFIGURING,COMPLETING -o '%A' 2>/dev/null || true)" ] && break
        sleep 0.5
      done
    fi
  fi
  stop_pid "$RUN/slurmd.pid" slurmd
  stop_pid "$RUN/slurmctld.pid" slurmctld
  stop_pid "$RUN/munged.pid" munged
  say "down"
}

cmd_status() {
  if cluster_up; then
    slurm_env sinfo
    return 0
  fi
  if pid_alive "$RUN/slurmctld.pid" slurmctld; then
    echo "slurm-local: the cluster is not usable (slurmd not running, or no idle/mixed/allocated node):" >&2
    slurm_env timeout 10 sinfo 2>&1 || true
  else
    echo "slurm-local: the cluster is down (no slurmctld of $RUN/slurmctld.pid)" >&2
  fi
  return 1
}

summary() {
  local version node
  version="$(slurm_env sinfo --version | awk '{print $2}')"
  node="$(slurm_env sinfo -h -N -o 'node %N: CPUs=%c RealMemory=%mMB GRES=%G state=%t partition=%P' | head -n1)"
  echo "SLURM $version cluster spgnet-local up: $node"
}

cmd_up() {
  install_packages
  if cluster_up; then
    say "already up (nothing to do)"
    summary
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || die "not root: the daemons run as root (SlurmUser=root)"
  # A half-started cluster (one daemon dead, the node down): stop what remains and start afresh.
  if pid_alive "$RUN/slurmctld.pid" slurmctld || pid_alive "$RUN/slurmd.pid" slurmd; then
    say "the cluster is partly up: restarting it"
    stop_pid "$RUN/slurmd.pid" slurmd
    stop_pid "$RUN/slurmctld.pid" slurmctld
  fi
  mkdir -p "$RUN" "$LOG"
  write_config
  start_munge
  say "starting slurmctld and slurmd ($CONF)"
  SLURM_CONF="$CONF" slurmctld >&2 9>&- || { log_tails; die "slurmctld did not start"; }
  SLURM_CONF="$CONF" slurmd >&2 9>&- || { log_tails; die "slurmd did not start"; }
  local start=$SECONDS state=""
  while [ $((SECONDS - start)) -lt "$TIMEOUT" ]; do
    state="$(node_state)"
    usable "$state" && break
    pid_alive "$RUN/slurmctld.pid" slurmctld || { state="slurmctld exited"; break; }
    pid_alive "$RUN/slurmd.pid" slurmd || { state="slurmd exited"; break; }
    sleep 1
  done
  usable "$state" || {
      echo "slurm-local: ERROR: node $(hostname -s) not idle within ${TIMEOUT}s (sinfo state: '${state:-no answer}'); the daemons that run are left running for inspection, \`$0 down\` stops them" >&2
      log_tails
      exit 1
  }
  summary
}

# One up/down at a time (two concurrent `up`s would both write the configuration and start daemons).
# The daemons are started with fd 9 closed (9>&-): they must not inherit, and so hold, the lock.
lock() {
  [ "$(id -u)" -eq 0 ] || return 0
  mkdir -p "$DIR" && exec 9>"$DIR/.lock" && flock -w 120 9 || die "another slurm-local.sh up/down holds $DIR/.lock"
}

case "${1:-}" in
  up) lock; cmd_up ;;
  down) lock; cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
