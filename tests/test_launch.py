"""The launch scripts in launch/: syntax, local multi-process runs, and the dry-run commands of the cluster scripts.

``local.sh`` runs once for real on the tiny training config (2 jax.distributed processes, 1 step, XLA
optimisations off: compiling dominates; the parity of 2-process training is tested in
test_training_loop.py); its
failure/signal handling is tested with a stand-in module that imports nothing heavy.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO

SCRIPTS = ["launch/local.sh", "launch/tpu_pod.sh", "launch/slurm.sh", "launch/port_official.sh"]

# A stand-in for titok_jax.main: records its flags, then behaves as FAKE_MODE says for its process id.
FAKE = """
import os, signal, sys, time
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
pid = int(args["process_id"])
signal.signal(signal.SIGTERM, lambda *_: (print(f"fake {pid} got SIGTERM", flush=True), sys.exit(143)))
print(f"fake process {pid}/{args['num_processes']} at {args['coordinator_address']} extra={sys.argv[-1]}", flush=True)
mode = os.environ["FAKE_MODE"]
if mode == "ok":
    sys.exit(0)
if mode == "fail1" and pid == 1:
    time.sleep(1)  # the others are up (their SIGTERM handlers installed) by then
    sys.exit(2)
time.sleep(120)
"""


def _env(**kw):
    e = dict(os.environ)
    for k in ("TPU_NAME", "ZONE", "PROJECT", "CONFIG", "WORKDIR", "SYNC", "REPO_URL", "INSTALL", "DRY_RUN", "PORT",
              "ACTION", "NUM_WORKERS", "VENV", "RUN_DIR", "LOG_DIR"):  # fmt: skip
        e.pop(k, None)
    e.update({k: str(v) for k, v in kw.items()})
    return e


def _bash(script, *args, timeout=120, **env):
    return subprocess.run(["bash", script, *args], cwd=REPO, env=_env(**env), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script):
    p = subprocess.run(["bash", "-n", script], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert os.access(REPO / script, os.X_OK), f"{script} is not executable"


@pytest.mark.slow
def test_local_two_processes_train(tmp_path):
    t0 = time.time()
    p = _bash(
        "launch/local.sh", "--max_steps=1", "--config.eval.batch_size=2", timeout=900,
        CONFIG="tests/configs/tiny_train.py:steps=2,batch=2,ckpt=2", WORKDIR=tmp_path, NUM_PROCESSES=2,
        JAX_DISABLE_MOST_OPTIMIZATIONS=1,  # compiling dominates; this tests the launcher, not numerics
    )  # fmt: skip
    seconds = time.time() - t0
    assert p.returncode == 0, f"stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    logs = [(tmp_path / "logs" / f"process_{i}.log").read_text() for i in range(2)]
    for log in logs:
        assert "devices: 2 (2 process(es))" in log, log[-2000:]
    assert '"stopped_at": 1' in logs[0] and '"stopped_at": 1' in p.stdout  # process 0 is streamed to stdout
    assert "all 2 processes finished" in p.stdout
    print(f"local.sh, 2 processes, 1 training step: {seconds:.1f}s")


def _fake(tmp_path, mode, n=3, *extra, **env):
    (tmp_path / "fake_worker.py").write_text(FAKE)
    return dict(
        args=["launch/local.sh", *extra],
        env=_env(
            CONFIG="c.py",
            WORKDIR=tmp_path / "w",
            NUM_PROCESSES=n,
            MODULE="fake_worker",
            FAKE_MODE=mode,
            PYTHONPATH=tmp_path,
            KILL_GRACE=5,
            PYTHON=sys.executable,
            **env,
        ),
    )


def test_local_forwards_args_and_logs_each_process(tmp_path):
    f = _fake(tmp_path, "ok", 3, "--max_steps=7")
    p = subprocess.run(["bash", *f["args"]], cwd=REPO, env=f["env"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    for i in range(3):
        log = (tmp_path / "w" / "logs" / f"process_{i}.log").read_text()
        assert f"fake process {i}/3 at localhost:" in log and "extra=--max_steps=7" in log
    assert "fake process 0/3" in p.stdout and "fake process 1/3" not in p.stdout


def test_local_first_failure_stops_the_others_and_sets_the_exit_code(tmp_path):
    f = _fake(tmp_path, "fail1", 3)
    t0 = time.time()
    p = subprocess.run(["bash", *f["args"]], cwd=REPO, env=f["env"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert time.time() - t0 < 30, "the other processes were not stopped"
    assert "process 1 exited with code 2" in p.stderr
    for i in (0, 2):
        assert f"fake {i} got SIGTERM" in (tmp_path / "w" / "logs" / f"process_{i}.log").read_text()


def test_local_forwards_sigterm_and_exits_143(tmp_path):
    f = _fake(tmp_path, "wait", 2)
    proc = subprocess.Popen(["bash", *f["args"]], cwd=REPO, env=f["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    logs = [tmp_path / "w" / "logs" / f"process_{i}.log" for i in range(2)]
    deadline = time.time() + 30
    while time.time() < deadline and not all(p.exists() and "fake process" in p.read_text() for p in logs):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, (out, err)
    for i, log in enumerate(logs):
        assert f"fake {i} got SIGTERM" in log.read_text()


def test_local_requires_config_and_workdir(tmp_path):
    p = _bash("launch/local.sh", WORKDIR=tmp_path)
    assert p.returncode != 0 and "CONFIG" in p.stderr
    p = _bash("launch/local.sh", CONFIG="c.py")
    assert p.returncode != 0 and "WORKDIR" in p.stderr
    p = _bash("launch/local.sh", CONFIG="c.py", WORKDIR=tmp_path, NUM_PROCESSES="two")
    assert p.returncode == 2 and "NUM_PROCESSES must be a positive integer" in p.stderr


TPU = dict(TPU_NAME="my-pod", ZONE="us-central2-b", PROJECT="my-proj", CONFIG="configs/titok_b64.py")


def test_tpu_pod_dry_run(tmp_path):
    p = _bash("launch/tpu_pod.sh", "--max_steps=3", "--config.data.path=/a b", DRY_RUN=1, WORKDIR="/shared/runs/b64",
              SYNC="git", REPO_URL="https://example.com/titok_jax.git", REF="v1", INSTALL=1, **TPU)  # fmt: skip
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("+ ")]
    assert len(lines) == 3, p.stdout
    ssh = "+ gcloud compute tpus tpu-vm ssh my-pod --zone=us-central2-b --project=my-proj --worker=all --command="
    assert all(ln.startswith(ssh) for ln in lines)
    assert "git clone --quiet https://example.com/titok_jax.git titok_jax" in lines[0]
    assert "git fetch --quiet origin v1" in lines[0]
    # A Python 3.11 virtual environment of its own on every worker, never the system pip.
    assert "python3.11 -m venv $HOME/titok_jax_venv" in lines[1]
    assert "$HOME/titok_jax_venv/bin/python -m pip install --quiet -r requirements.txt jax\\[tpu\\]==" in lines[1]
    assert "gcsfs" in lines[1]
    # Detached (setsid nohup, no stdin): a dropped SSH connection does not stop training; a log and a pid per worker.
    assert ("cd titok_jax && setsid nohup $HOME/titok_jax_venv/bin/python -m titok_jax.main "
            "--config=configs/titok_b64.py --workdir=/shared/runs/b64 --distributed --max_steps=3 "
            "--config.data.path=/a\\ b > /tmp/titok_jax_run/train.log 2>&1 < /dev/null &") in lines[2]  # fmt: skip
    assert "echo $! > /tmp/titok_jax_run/train.pid" in lines[2] and "a run is alive" in lines[2]
    # gs:// workdir: passed as it is (titok_jax reads and writes it through etils.epath; no gcsfuse mount).
    p = _bash("launch/tpu_pod.sh", DRY_RUN=1, WORKDIR="gs://bkt/runs/x", **TPU)
    assert p.returncode == 0, p.stderr
    (line,) = [ln for ln in p.stdout.splitlines() if ln.startswith("+ ")]
    assert "--workdir=gs://bkt/runs/x --distributed" in line and "gcsfuse" not in line
    # SYNC=copy: an archive of this checkout goes to every worker.
    p = _bash("launch/tpu_pod.sh", DRY_RUN=1, WORKDIR="/shared/w", SYNC="copy", **TPU)
    assert p.returncode == 0, p.stderr
    assert "+ gcloud compute tpus tpu-vm scp" in p.stdout and "my-pod:/tmp/titok_jax_src.tgz" in p.stdout
    assert "tar -xzf /tmp/titok_jax_src.tgz -C titok_jax" in p.stdout


def test_tpu_pod_collects_logs_per_worker_and_stops_by_pid():
    env = {k: v for k, v in TPU.items() if k != "CONFIG"}
    p = _bash("launch/tpu_pod.sh", DRY_RUN=1, ACTION="logs", NUM_WORKERS=2, LOG_DIR="logs/pod", **env)
    assert p.returncode == 0, p.stderr
    for i in range(2):
        assert (f"+ gcloud compute tpus tpu-vm scp my-pod:/tmp/titok_jax_run/train.log logs/pod/worker_{i}.log "
                f"--zone=us-central2-b --project=my-proj --worker={i}") in p.stdout  # fmt: skip
    p = _bash("launch/tpu_pod.sh", DRY_RUN=1, ACTION="logs", **env)  # the worker count is asked from gcloud
    assert "tpu-vm describe my-pod" in p.stdout and "networkEndpoints" in p.stdout
    p = _bash("launch/tpu_pod.sh", DRY_RUN=1, ACTION="stop", **env)
    assert p.returncode == 0 and "--worker=all" in p.stdout
    assert "kill -TERM $(cat /tmp/titok_jax_run/train.pid)" in p.stdout
    p = _bash("launch/tpu_pod.sh", DRY_RUN=1, ACTION="restart", **env)
    assert p.returncode == 2 and "ACTION must be train, logs or stop" in p.stderr


@pytest.mark.parametrize("missing", ["TPU_NAME", "ZONE", "PROJECT", "CONFIG", "WORKDIR"])
def test_tpu_pod_requires_variables(missing):
    env = dict(TPU, WORKDIR="/shared/w", DRY_RUN=1)
    del env[missing]
    p = _bash("launch/tpu_pod.sh", **env)
    assert p.returncode != 0 and f"{missing}: set {missing}" in p.stderr, p.stderr
    assert "gcloud" not in p.stdout


def test_tpu_pod_rejects_bad_settings():
    p = _bash("launch/tpu_pod.sh", DRY_RUN=1, WORKDIR="runs/local", **TPU)
    assert p.returncode == 2 and "relative path" in p.stderr and "gs://" in p.stderr
    p = _bash("launch/tpu_pod.sh", DRY_RUN=1, WORKDIR="/shared/w", SYNC="git", **TPU)
    assert p.returncode != 0 and "REPO_URL" in p.stderr
    p = _bash("launch/tpu_pod.sh", DRY_RUN=1, WORKDIR="/shared/w", SYNC="ftp", **TPU)
    assert p.returncode == 2 and "SYNC must be none, git or copy" in p.stderr


def test_slurm_dry_run_and_header(tmp_path):
    p = _bash("launch/slurm.sh", "--max_steps=3", DRY_RUN=1, CONFIG="configs/titok_b64.py", WORKDIR="/shared/runs/b64",
              SRUN_ARGS="--cpu-bind=none", PYTHON="python3")  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == (
        "+ srun --kill-on-bad-exit=1 --cpu-bind=none python3 -m titok_jax.main --config=configs/titok_b64.py "
        "--workdir=/shared/runs/b64 --distributed --max_steps=3"
    )
    header = [ln for ln in (REPO / "launch/slurm.sh").read_text().splitlines() if ln.startswith("#SBATCH")]
    for opt in ("--nodes=", "--ntasks-per-node=", "--gres=gpu:", "--cpus-per-task=", "--time="):
        assert any(ln.startswith(f"#SBATCH {opt}") for ln in header), opt
    for missing in ("CONFIG", "WORKDIR"):
        env = dict(DRY_RUN=1, CONFIG="c.py", WORKDIR="/w")
        del env[missing]
        p = _bash("launch/slurm.sh", **env)
        assert p.returncode != 0 and f"{missing}: set {missing}" in p.stderr and "srun" not in p.stdout
