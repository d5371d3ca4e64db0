"""Thin command-line programs (absl flags, underscores); each is also a console script ``titok-*``.
Shared convention, distributed start and exit codes: ``titok_jax.cli.common``."""
