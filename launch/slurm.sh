#!/usr/bin/env bash
#SBATCH --job-name=titok_jax
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@300
#SBATCH --output=slurm-%x-%j.out
#
# Train with SLURM: one `python -m titok_jax.main` process per GPU on every node, joined by
# jax.distributed (`--distributed`: jax.distributed.initialize() reads the coordinator, process count and
# process index from SLURM's environment, and gives each process the GPU numbered SLURM_LOCALID).
#
#   CONFIG=configs/titok_b64.py WORKDIR=/shared/runs/b64 sbatch launch/slurm.sh --config.data.data_dir=/data/tfds
#   CONFIG=... WORKDIR=... sbatch --nodes=4 --ntasks-per-node=4 --gres=gpu:4 --time=48:00:00 launch/slurm.sh
#
# The #SBATCH lines above are defaults; sbatch options on the command line override them. Keep
# --ntasks-per-node equal to the GPUs per node, and request the GPUs per NODE (--gres=gpu:N or
# --gpus-per-node=N) so that every task sees all GPUs of its node: JAX picks GPU number SLURM_LOCALID,
# which does not exist when SLURM hands each task a single GPU (--gpus-per-task=1 with GPU binding).
# --signal=TERM@300 sends SIGTERM 5 minutes before the time limit: every process saves a checkpoint and
# exits 143; resubmitting the same command resumes from it (add --requeue to let SLURM do that after a
# preemption).
#
# Variables (environment; sbatch passes the submitting shell's environment to the job):
#   CONFIG     config file, relative to REPO_DIR (required), e.g. configs/titok_b64.py or configs/x.py:arg
#   WORKDIR    run directory (required); must be on a filesystem that every node sees at the same path
#   REPO_DIR   the titok_jax checkout (default: the directory sbatch was called from, $SLURM_SUBMIT_DIR,
#              when it holds titok_jax/, else this script's parent directory)
#   PYTHON     interpreter (default: REPO_DIR/.venv/bin/python if present, else python3)
#   SRUN_ARGS  extra srun options, e.g. "--cpu-bind=none"
#   DRY_RUN    1: print the srun command instead of running it (works outside SLURM too)
# Extra arguments are forwarded to titok_jax.main (e.g. --config.seed=1 --max_steps=100). The job runs from
# REPO_DIR, so a relative WORKDIR is relative to it.
set -euo pipefail
: "${CONFIG:?set CONFIG to the config file, e.g. CONFIG=configs/titok_b64.py}"
: "${WORKDIR:?set WORKDIR to the run directory (on a filesystem shared by all nodes)}"
if [[ -z "${REPO_DIR:-}" ]]; then
  if [[ -n "${SLURM_SUBMIT_DIR:-}" && -d "$SLURM_SUBMIT_DIR/titok_jax" ]]; then
    REPO_DIR="$SLURM_SUBMIT_DIR"
  else  # under sbatch this script runs from a spool copy, hence SLURM_SUBMIT_DIR first
    REPO_DIR="$(cd "$(dirname "$0")/.." && pwd)"
  fi
fi
cd "$REPO_DIR"
if [[ ! -d titok_jax ]]; then
  echo "error: $REPO_DIR is not a titok_jax checkout; submit from the checkout or set REPO_DIR" >&2
  exit 2
fi
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON="$PWD/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# shellcheck disable=SC2206
cmd=(srun --kill-on-bad-exit=1 ${SRUN_ARGS:-} "$PYTHON" -m titok_jax.main --config="$CONFIG" --workdir="$WORKDIR"
     --distributed "$@")
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '+'
  printf ' %q' "${cmd[@]}"
  printf '\n'
  exit 0
fi
echo "[slurm] job ${SLURM_JOB_ID:-?}: ${SLURM_NNODES:-?} node(s) x ${SLURM_NTASKS_PER_NODE:-?} task(s), workdir $WORKDIR"
exec "${cmd[@]}"
