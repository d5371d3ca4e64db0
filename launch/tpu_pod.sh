#!/usr/bin/env bash
# Train on every worker (host) of a Cloud TPU VM pod slice: one `python -m titok_jax.main` process per
# worker, joined by jax.distributed (`--distributed`: jax.distributed.initialize() finds the other
# workers by itself on Cloud TPU VMs). Run it from your workstation; it drives the workers through
# `gcloud compute tpus tpu-vm ssh --worker=all` (and `scp`).
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b PROJECT=my-project CONFIG=configs/titok_b64.py \
#     WORKDIR=gs://my-bucket/runs/b64 SYNC=git REPO_URL=https://github.com/me/titok_jax.git INSTALL=1 \
#     launch/tpu_pod.sh --config.data.data_dir=gs://my-bucket/tensorflow_datasets
#   TPU_NAME=... ZONE=... PROJECT=... ACTION=logs launch/tpu_pod.sh     # copy every worker's log here
#   TPU_NAME=... ZONE=... PROJECT=... ACTION=stop launch/tpu_pod.sh     # SIGTERM: save, exit 143
#
# ACTION=train (default) syncs the code, installs it if asked, and starts the training DETACHED on every
# worker (setsid nohup, stdin closed): it keeps running when this script ends or the SSH connection
# drops. Each worker writes its output to $RUN_DIR/train.log and its process id to $RUN_DIR/train.pid.
# ACTION=logs copies each worker's log to $LOG_DIR/worker_<i>.log (and prints the last lines);
# ACTION=stop sends SIGTERM to the training process of every worker (each saves the same step and exits
# 143; ACTION=train with the same WORKDIR resumes). A second ACTION=train while a run is alive on the
# workers is refused there (the pid file), and titok_jax itself refuses a second run on one WORKDIR.
#
# Required variables (environment):
#   TPU_NAME      name of the TPU VM (pod slice)
#   ZONE          its zone, e.g. us-central2-b
#   PROJECT       its Google Cloud project
#   CONFIG        (train) config file, relative to the code directory on the workers (e.g. configs/titok_b64.py:arg)
#   WORKDIR       (train) the run directory; ONE directory every worker sees: a Cloud Storage location
#                 gs://BUCKET/PATH (read and written natively through etils.epath and gcsfs, no mount), or
#                 the absolute path of a shared filesystem mounted on every worker (Filestore/NFS). A
#                 worker-local path such as /tmp/run would give each worker its own partial checkpoints.
# Optional variables:
#   ACTION        train (default) | logs | stop
#   SYNC          how the code gets onto the workers: none (default: it is already in REMOTE_DIR on every
#                 worker) | git (clone REPO_URL into REMOTE_DIR if absent, then fetch and check out REF) |
#                 copy (pack this checkout's tracked and not-ignored untracked files, scp the archive to
#                 every worker and unpack it into REMOTE_DIR)
#   REPO_URL      git URL for SYNC=git
#   REF           branch, tag or commit for SYNC=git (default main)
#   REMOTE_DIR    code directory on the workers (default titok_jax, relative to the remote home directory)
#   INSTALL       1: create the virtual environment VENV with BASE_PYTHON (if absent) and install
#                 requirements.txt, JAX_TPU_SPEC and gcsfs into it on every worker (default 0)
#   VENV          the workers' virtual environment (default titok_jax_venv, relative to the remote home);
#                 training runs VENV/bin/python, never the system interpreter
#   BASE_PYTHON   the Python 3.11 that creates VENV (default python3.11)
#   JAX_TPU_SPEC  the TPU build of JAX to install (default "jax[tpu]==<the jax version pinned in
#                 requirements.txt>")
#   ENV_VARS      extra environment for the training processes, e.g. "TF_CPP_MIN_LOG_LEVEL=3"
#   RUN_DIR       where each worker keeps train.log and train.pid (default /tmp/titok_jax_run)
#   LOG_DIR       (logs) local folder for the collected logs (default tpu_logs/$TPU_NAME)
#   NUM_WORKERS   (logs) number of workers; default: counted with `gcloud compute tpus tpu-vm describe`
#   GCLOUD        gcloud executable (default gcloud); GCLOUD_FLAGS: extra flags for every gcloud call,
#                 e.g. "--internal-ip" or "--tunnel-through-iap"
#   DRY_RUN       1: print the commands instead of running them
# Extra arguments are forwarded to titok_jax.main on every worker (e.g. --config.seed=1 --max_steps=100).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${TPU_NAME:?set TPU_NAME to the name of the TPU VM pod slice}"
: "${ZONE:?set ZONE to the zone of the TPU VM, e.g. ZONE=us-central2-b}"
: "${PROJECT:?set PROJECT to the Google Cloud project of the TPU VM}"
ACTION="${ACTION:-train}"
SYNC="${SYNC:-none}"
REF="${REF:-main}"
REMOTE_DIR="${REMOTE_DIR:-titok_jax}"
INSTALL="${INSTALL:-0}"
VENV="${VENV:-titok_jax_venv}"
BASE_PYTHON="${BASE_PYTHON:-python3.11}"
ENV_VARS="${ENV_VARS:-}"
RUN_DIR="${RUN_DIR:-/tmp/titok_jax_run}"
LOG_DIR="${LOG_DIR:-tpu_logs/$TPU_NAME}"
GCLOUD="${GCLOUD:-gcloud}"
GCLOUD_FLAGS="${GCLOUD_FLAGS:-}"
DRY_RUN="${DRY_RUN:-0}"
case "$ACTION" in
  train)
    : "${CONFIG:?set CONFIG to the config file (path on the workers, relative to REMOTE_DIR), e.g. configs/titok_b64.py}"
    : "${WORKDIR:?set WORKDIR to a directory every worker sees: gs://BUCKET/PATH or a shared filesystem path}"
    ;;
  logs | stop) ;;
  *) echo "error: ACTION must be train, logs or stop, got '$ACTION'" >&2; exit 2 ;;
esac
case "$SYNC" in
  none | copy) ;;
  git) : "${REPO_URL:?SYNC=git needs REPO_URL (the git URL of the titok_jax repository)}" ;;
  *) echo "error: SYNC must be none, git or copy, got '$SYNC'" >&2; exit 2 ;;
esac
if [[ -z "${JAX_TPU_SPEC:-}" ]]; then
  jax_version="$(sed -n 's/^jax==\([^ ]*\).*/\1/p' requirements.txt 2>/dev/null | head -n 1)"
  JAX_TPU_SPEC="jax[tpu]${jax_version:+==$jax_version}"
fi

q() { printf '%q' "$1"; }                          # quote one value for the remote shell
squote() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }  # single-quote a whole command for printing

gflags=(--zone="$ZONE" --project="$PROJECT")
# shellcheck disable=SC2206
[[ -n "$GCLOUD_FLAGS" ]] && gflags+=($GCLOUD_FLAGS)

run() {  # run CMD...: execute, or print it (shell-quoted) with DRY_RUN=1
  if [[ "$DRY_RUN" == 1 ]]; then
    local out="+" a
    for a in "$@"; do
      if [[ "$a" == --command=* ]]; then out+=" --command=$(squote "${a#--command=}")"; else out+=" $(q "$a")"; fi
    done
    echo "$out"
  else
    "$@"
  fi
}
on_workers() { run "$GCLOUD" compute tpus tpu-vm ssh "$TPU_NAME" "${gflags[@]}" --worker=all --command="$1"; }
pidfile="$(q "$RUN_DIR")/train.pid"

if [[ "$ACTION" == stop ]]; then
  on_workers "if [ -f $pidfile ] && kill -0 \$(cat $pidfile) 2>/dev/null; then kill -TERM \$(cat $pidfile) && echo \"\$(hostname): sent SIGTERM to \$(cat $pidfile)\"; else echo \"\$(hostname): no training process\"; fi"
  exit 0
fi

if [[ "$ACTION" == logs ]]; then
  if [[ -z "${NUM_WORKERS:-}" ]]; then
    if [[ "$DRY_RUN" == 1 ]]; then
      NUM_WORKERS=1
      run "$GCLOUD" compute tpus tpu-vm describe "$TPU_NAME" "${gflags[@]}" "--format=value(networkEndpoints.len())"
    else
      NUM_WORKERS="$("$GCLOUD" compute tpus tpu-vm describe "$TPU_NAME" "${gflags[@]}" \
        "--format=value(networkEndpoints.len())")"
    fi
  fi
  [[ "$DRY_RUN" == 1 ]] || mkdir -p "$LOG_DIR"
  for ((i = 0; i < NUM_WORKERS; i++)); do
    run "$GCLOUD" compute tpus tpu-vm scp "$TPU_NAME:$RUN_DIR/train.log" "$LOG_DIR/worker_$i.log" "${gflags[@]}" \
      --worker="$i"
    if [[ "$DRY_RUN" != 1 ]]; then echo "== worker $i: $LOG_DIR/worker_$i.log"; tail -n 5 "$LOG_DIR/worker_$i.log"; fi
  done
  exit 0
fi

# The workdir: gs://BUCKET/PATH is passed as it is (titok_jax reads and writes it natively).
if [[ "$WORKDIR" != gs://* && "$WORKDIR" != /* ]]; then
  echo "error: WORKDIR=$WORKDIR is a relative path, i.e. a different local directory on every worker; give" \
    "gs://BUCKET/PATH or the absolute path of a shared filesystem mounted on every worker" >&2
  exit 2
fi
if [[ "$WORKDIR" == gs://* && -z "${WORKDIR#gs://}" ]]; then
  echo "error: WORKDIR=$WORKDIR names no bucket (expected gs://BUCKET/PATH)" >&2
  exit 2
fi

# 1. code
case "$SYNC" in
  git)
    on_workers "set -e; [ -d $(q "$REMOTE_DIR")/.git ] || git clone --quiet $(q "$REPO_URL") $(q "$REMOTE_DIR"); cd $(q "$REMOTE_DIR") && git fetch --quiet origin $(q "$REF") && git checkout --quiet --force FETCH_HEAD && git log -1 --oneline"
    ;;
  copy)
    archive="${TMPDIR:-/tmp}/titok_jax_src_$$.tgz"
    if [[ "$DRY_RUN" == 1 ]]; then
      echo "+ git ls-files -z --cached --others --exclude-standard | tar -czf $(q "$archive") --null -T -"
    else
      git ls-files -z --cached --others --exclude-standard | tar -czf "$archive" --null -T -
      trap 'rm -f "$archive"' EXIT
    fi
    run "$GCLOUD" compute tpus tpu-vm scp "$archive" "$TPU_NAME:/tmp/titok_jax_src.tgz" "${gflags[@]}" --worker=all
    on_workers "set -e; mkdir -p $(q "$REMOTE_DIR") && tar -xzf /tmp/titok_jax_src.tgz -C $(q "$REMOTE_DIR") && rm -f /tmp/titok_jax_src.tgz"
    ;;
esac

# 2. dependencies, in a virtual environment of its own (never the system pip)
if [[ "$VENV" == /* ]]; then vdir="$(q "$VENV")"; else vdir="\$HOME/$(q "$VENV")"; fi
vpy="$vdir/bin/python"
if [[ "$INSTALL" == 1 ]]; then
  on_workers "set -e; [ -x $vpy ] || $(q "$BASE_PYTHON") -m venv $vdir; cd $(q "$REMOTE_DIR") && $vpy -m pip install --quiet -r requirements.txt $(q "$JAX_TPU_SPEC") gcsfs"
fi

# 3. training, detached: every worker runs the same command; jax.distributed discovers the others.
args=""
for a in "$@"; do args+=" $(q "$a")"; done
train="set -e; mkdir -p $(q "$RUN_DIR"); if [ -f $pidfile ] && kill -0 \$(cat $pidfile) 2>/dev/null; then echo \"\$(hostname): a run is alive (pid \$(cat $pidfile)); ACTION=stop first\" >&2; exit 1; fi; "
train+="cd $(q "$REMOTE_DIR") && setsid nohup ${ENV_VARS:+env $ENV_VARS }$vpy -m titok_jax.main"
train+=" --config=$(q "$CONFIG") --workdir=$(q "$WORKDIR") --distributed$args > $(q "$RUN_DIR")/train.log 2>&1 < /dev/null &"
train+=" echo \$! > $pidfile; echo \"\$(hostname): training started (pid \$(cat $pidfile)), log $(q "$RUN_DIR")/train.log\""
on_workers "$train"
