"""The Python API for inference and weights: ``Tokenizer``, ``Sampler``, weight import/export.

from titok_jax.api import Tokenizer, Sampler, import_weights, export_weights
tok = Tokenizer.from_pretrained("yucornetto/tokenizer_titok_l32_imagenet")   # Hugging Face hub, folder or file
"""

from titok_jax.api.sampler import Sampler
from titok_jax.api.tokenizer import Tokenizer
from titok_jax.api.weights import (
    export_generator_weights,
    export_weights,
    import_generator_weights,
    import_weights,
)
from titok_jax.models.titok import DECODE_PARTS, ENCODE_PARTS

__all__ = [
    "DECODE_PARTS",
    "ENCODE_PARTS",
    "Sampler",
    "Tokenizer",
    "export_generator_weights",
    "export_weights",
    "import_generator_weights",
    "import_weights",
]
