"""Benchmarks (tables, never unit tests): inference throughput (``inference``) and train steps
(``train_step``). They import no TensorFlow, grain or Orbax; the command lines are ``titok-bench`` and
``titok-bench-train``."""
