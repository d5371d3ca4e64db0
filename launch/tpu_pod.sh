#!/usr/bin/env bash
# Train on every worker (host) of a Cloud TPU VM pod slice: one `python -m titok_jax.main` process per
# worker, joined by jax.distributed (`--distributed`: jax.distributed.initialize() finds the other
# workers by itself on Cloud TPU VMs). Run it from your workstation; it drives the workers through
# `gcloud compute tpus tpu-vm ssh --worker=all` (and `scp` for SYNC=copy).
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b PROJECT=my-project CONFIG=configs/titok_b64.py \
#     WORKDIR=gs://my-bucket/runs/b64 SYNC=git REPO_URL=https://github.com/me/titok_jax.git INSTALL=1 \
#     launch/tpu_pod.sh --config.data.data_dir=/mnt/data/tensorflow_datasets
#
# Required variables (environment):
#   TPU_NAME      name of the TPU VM (pod slice)
#   ZONE          its zone, e.g. us-central2-b
#   PROJECT       its Google Cloud project
#   CONFIG        config file, relative to the code directory on the workers (e.g. configs/titok_b64.py:arg)
#   WORKDIR       the run directory; it must be ONE directory that every worker sees at the same path
#                 (checkpoints are written by all workers together, DONE/results files by worker 0):
#                 either a shared filesystem mounted on every worker (e.g. Filestore/NFS), or a Cloud
#                 Storage location gs://BUCKET/PATH: then BUCKET is mounted with gcsfuse on every worker
#                 at $GCS_MOUNT/BUCKET and the mounted path is passed as --workdir (titok_jax writes its
#                 workdir with ordinary file I/O, so the bucket must be mounted; gcsfuse must be installed
#                 on the workers). A worker-local path such as /tmp/run would give each worker its own
#                 partial checkpoints: do not use one.
# Optional variables:
#   SYNC          how the code gets onto the workers: none (default: it is already in REMOTE_DIR on every
#                 worker) | git (clone REPO_URL into REMOTE_DIR if absent, then fetch and check out REF) |
#                 copy (pack this checkout's tracked and not-ignored untracked files, scp the archive to
#                 every worker and unpack it into REMOTE_DIR)
#   REPO_URL      git URL for SYNC=git
#   REF           branch, tag or commit for SYNC=git (default main)
#   REMOTE_DIR    code directory on the workers (default titok_jax, relative to the remote home directory)
#   INSTALL       1: pip install -r requirements.txt and JAX_TPU_SPEC on every worker first (default 0)
#   JAX_TPU_SPEC  the TPU build of JAX to install (default "jax[tpu]==<the jax version pinned in
#                 requirements.txt>")
#   PYTHON        interpreter on the workers (default python3)
#   ENV_VARS      extra environment for the training processes, e.g. "TFDS_DATA_DIR=/mnt/data TF_CPP_MIN_LOG_LEVEL=3"
#   GCS_MOUNT     where gs:// buckets are mounted on the workers (default /tmp/gcs)
#   REMOTE_LOG    each worker also appends its output to this file (default /tmp/titok_jax_train.log)
#   GCLOUD        gcloud executable (default gcloud); GCLOUD_FLAGS: extra flags for every gcloud call,
#                 e.g. "--internal-ip" or "--tunnel-through-iap"
#   DRY_RUN       1: print the commands instead of running them
# Extra arguments are forwarded to titok_jax.main on every worker (e.g. --config.seed=1 --max_steps=100).
#
# Preemption: a worker that receives SIGTERM saves a checkpoint and exits 143; rerunning this script with
# the same WORKDIR resumes. The exit status is gcloud's (non-zero when a worker failed).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${TPU_NAME:?set TPU_NAME to the name of the TPU VM pod slice}"
: "${ZONE:?set ZONE to the zone of the TPU VM, e.g. ZONE=us-central2-b}"
: "${PROJECT:?set PROJECT to the Google Cloud project of the TPU VM}"
: "${CONFIG:?set CONFIG to the config file (path on the workers, relative to REMOTE_DIR), e.g. configs/titok_b64.py}"
: "${WORKDIR:?set WORKDIR to a directory every worker sees: gs://BUCKET/PATH (mounted with gcsfuse) or a shared filesystem path}"
SYNC="${SYNC:-none}"
REF="${REF:-main}"
REMOTE_DIR="${REMOTE_DIR:-titok_jax}"
INSTALL="${INSTALL:-0}"
PYTHON="${PYTHON:-python3}"
ENV_VARS="${ENV_VARS:-}"
GCS_MOUNT="${GCS_MOUNT:-/tmp/gcs}"
REMOTE_LOG="${REMOTE_LOG:-/tmp/titok_jax_train.log}"
GCLOUD="${GCLOUD:-gcloud}"
GCLOUD_FLAGS="${GCLOUD_FLAGS:-}"
DRY_RUN="${DRY_RUN:-0}"
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

# The workdir the workers use: a gs:// URL becomes its gcsfuse mount point.
if [[ "$WORKDIR" != gs://* && "$WORKDIR" != /* ]]; then
  echo "error: WORKDIR=$WORKDIR is a relative path, i.e. a different local directory on every worker; give" \
    "gs://BUCKET/PATH or the absolute path of a shared filesystem mounted on every worker" >&2
  exit 2
fi
mount_cmd=""
remote_workdir="$WORKDIR"
if [[ "$WORKDIR" == gs://* ]]; then
  rest="${WORKDIR#gs://}"
  bucket="${rest%%/*}"
  sub=""
  [[ "$rest" == */* ]] && sub="/${rest#*/}"
  if [[ -z "$bucket" ]]; then echo "error: WORKDIR=$WORKDIR names no bucket (expected gs://BUCKET/PATH)" >&2; exit 2; fi
  mnt="$GCS_MOUNT/$bucket"
  remote_workdir="$mnt${sub%/}"
  mount_cmd="command -v gcsfuse >/dev/null || { echo 'gcsfuse is not installed on this worker (needed for WORKDIR=gs://...)' >&2; exit 2; }; "
  mount_cmd+="mkdir -p $(q "$mnt") && { mountpoint -q $(q "$mnt") || gcsfuse --implicit-dirs --rename-dir-limit=1000000 "
  mount_cmd+="$(q "$bucket") $(q "$mnt"); } && mkdir -p $(q "$remote_workdir")"
fi

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

# 2. dependencies
if [[ "$INSTALL" == 1 ]]; then
  on_workers "set -e; cd $(q "$REMOTE_DIR") && $(q "$PYTHON") -m pip install --quiet -r requirements.txt && $(q "$PYTHON") -m pip install --quiet $(q "$JAX_TPU_SPEC")"
fi

# 3. training: every worker runs the same command; jax.distributed discovers the others.
args=""
for a in "$@"; do args+=" $(q "$a")"; done
train="set -o pipefail; ${mount_cmd:+$mount_cmd && }cd $(q "$REMOTE_DIR") && ${ENV_VARS:+env $ENV_VARS }$(q "$PYTHON") -m titok_jax.main"
train+=" --config=$(q "$CONFIG") --workdir=$(q "$remote_workdir") --distributed$args 2>&1 | tee -a $(q "$REMOTE_LOG")"
on_workers "$train"
