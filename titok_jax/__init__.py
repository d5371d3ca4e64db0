"""titok_jax: a JAX/Flax reimplementation of TiTok (bytedance/1d-tokenizer).

Importing this package (and ``titok_jax.models``, ``titok_jax.porting``) never
imports TensorFlow, so inference and weight porting run on bare GPU/TPU hosts.
"""

__version__ = "0.2.0"
