#!/usr/bin/env bash
# Run NUM_PROCESSES processes of a titok_jax command on this machine, joined by jax.distributed.
#
# Meant for testing multi-host code paths on one machine (CPU by default: every process gets
# DEVICES_PER_PROCESS fake CPU devices) and for single-machine multi-GPU runs with one process per GPU.
#
#   CONFIG=tests/configs/tiny_train.py WORKDIR=out/local2 NUM_PROCESSES=2 launch/local.sh --max_steps=4
#
# Variables (environment):
#   CONFIG               config file passed as --config (required), e.g. configs/demo.py or configs/x.py:arg
#   WORKDIR              run directory passed as --workdir (required); per-process logs go to
#                        $WORKDIR/logs/process_<i>.log (process 0 is also streamed to stdout)
#   NUM_PROCESSES        number of processes (default 2)
#   DEVICES_PER_PROCESS  devices per process (default 1). On CPU: the number of fake host devices
#                        (XLA_FLAGS=--xla_force_host_platform_device_count=N, appended to any XLA_FLAGS
#                        already set). On GPU: each process gets its own block of N GPUs through
#                        CUDA_VISIBLE_DEVICES (process i: GPUs i*N .. i*N+N-1).
#   PLATFORM             JAX_PLATFORMS for the processes (default cpu); "cuda" for GPUs; set it to ""
#                        to let JAX choose (then no device variables are set).
#   MODULE               python module to run (default titok_jax.main; any module with the
#                        --config/--workdir/--coordinator_address/--num_processes/--process_id flags,
#                        e.g. titok_jax.cli.pretokenize or titok_jax.cli.linear_probe)
#   PORT                 coordinator port on localhost (default: a free port picked at start)
#   KILL_GRACE           seconds the processes get to stop after SIGTERM before SIGKILL (default 60)
#   PYTHON               interpreter (default: .venv/bin/python if present, else python3)
# Extra arguments are forwarded to every process (e.g. --max_steps=4 --config.seed=1). The script runs from
# the repository root, so relative CONFIG/WORKDIR paths are relative to it.
#
# Exit status: 0 if every process succeeded, else the exit code of the first process that failed
# (e.g. 143 = preempted after saving a checkpoint, 2 = bad input, 3 = training error); the others are
# then sent SIGTERM (SIGKILL after KILL_GRACE seconds). SIGINT/SIGTERM to this script are forwarded to
# all processes (the training loop saves a checkpoint and exits 143), and the script exits 143.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CONFIG:?set CONFIG to a config file, e.g. CONFIG=configs/demo.py}"
: "${WORKDIR:?set WORKDIR to the run directory, e.g. WORKDIR=out/local_run}"
NUM_PROCESSES="${NUM_PROCESSES:-2}"
DEVICES_PER_PROCESS="${DEVICES_PER_PROCESS:-1}"
PLATFORM="${PLATFORM-cpu}"
MODULE="${MODULE:-titok_jax.main}"
KILL_GRACE="${KILL_GRACE:-60}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
for v in NUM_PROCESSES DEVICES_PER_PROCESS KILL_GRACE; do
  if ! [[ "${!v}" =~ ^[1-9][0-9]*$ ]]; then echo "error: $v must be a positive integer, got '${!v}'" >&2; exit 2; fi
done
if [[ -z "${PORT:-}" ]]; then
  PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi

LOGDIR="$WORKDIR/logs"
mkdir -p "$LOGDIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ -n "$PLATFORM" ]]; then export JAX_PLATFORMS="$PLATFORM"; fi
if [[ "$PLATFORM" == "cpu" ]]; then
  export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$DEVICES_PER_PROCESS"
fi

echo "[local] $NUM_PROCESSES process(es) x $DEVICES_PER_PROCESS device(s) (${PLATFORM:-auto}), coordinator" \
  "localhost:$PORT, module $MODULE, logs in $LOGDIR"
pids=()
for ((i = 0; i < NUM_PROCESSES; i++)); do
  (
    if [[ "$PLATFORM" == "cuda" || "$PLATFORM" == "gpu" ]]; then
      first=$((i * DEVICES_PER_PROCESS))
      CUDA_VISIBLE_DEVICES="$(seq -s, "$first" $((first + DEVICES_PER_PROCESS - 1)))"
      export CUDA_VISIBLE_DEVICES
    fi
    exec "$PYTHON" -m "$MODULE" --config="$CONFIG" --workdir="$WORKDIR" --coordinator_address="localhost:$PORT" \
      --num_processes="$NUM_PROCESSES" --process_id="$i" "$@"
  ) >"$LOGDIR/process_$i.log" 2>&1 &
  pids+=("$!")
done
tail -n +1 -f --pid="${pids[0]}" "$LOGDIR/process_0.log" &
tail_pid=$!

stop_all() {  # stop_all SIGNAL: signal the processes still running, SIGKILL them after KILL_GRACE seconds
  local sig="$1" pid waited=0 alive
  for pid in "${pids[@]}"; do [[ -n "$pid" ]] && kill -"$sig" "$pid" 2>/dev/null || true; done
  while ((waited < KILL_GRACE * 10)); do
    alive=0
    for pid in "${pids[@]}"; do [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.1
    waited=$((waited + 1))
  done
  for pid in "${pids[@]}"; do [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null || true; done
}

interrupted=0
on_signal() {
  interrupted=1
  echo "[local] signal received: forwarding SIGTERM to all processes" >&2
  stop_all TERM
}
trap on_signal INT TERM

rc=0
remaining=$NUM_PROCESSES
while ((remaining > 0)); do
  for i in "${!pids[@]}"; do
    pid="${pids[$i]}"
    [[ -z "$pid" ]] && continue
    kill -0 "$pid" 2>/dev/null && continue
    code=0
    wait "$pid" || code=$?
    pids[i]=""
    remaining=$((remaining - 1))
    if ((code != 0 && rc == 0 && !interrupted)); then
      rc=$code
      echo "[local] process $i exited with code $code (log: $LOGDIR/process_$i.log); stopping the others" >&2
      stop_all TERM
    fi
  done
  ((remaining > 0)) && sleep 0.2
done
wait "$tail_pid" 2>/dev/null || true
if ((interrupted && rc == 0)); then rc=143; fi
if ((rc == 0)); then echo "[local] all $NUM_PROCESSES processes finished"; fi
exit "$rc"
