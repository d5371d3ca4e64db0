"""``python -m titok_jax.main --config=... --workdir=...``: the training command (``titok_jax.cli.train``),
kept under this name because users' documents and launch scripts name it."""

from titok_jax.cli.train import run

if __name__ == "__main__":
    run()
