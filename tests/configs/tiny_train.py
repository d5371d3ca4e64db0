"""A seconds-scale training run for the loop tests: single-stage tiny TiTok on the bundled photos.

arg: ``steps=N,batch=B,ckpt=K,eval=E`` (defaults 12, 8, 4, 8; E: the eval batch).
"""

from titok_jax.config import presets


def get_config(arg=None):
    a = presets.parse_arg(arg, steps=12, batch=8, ckpt=4, seed=0, eval=8)
    c = presets.training_config("titok_tiny_vq", f"seed={a['seed']}")
    c.stages = ("single_stage",)
    c.data = presets.data_config(source="photos", split="train", eval_split="eval", min_scale=0.25, num_threads=2)
    c.eval.batch_size = a["eval"]
    c.discriminator = dict(hidden_channels=32, num_stages=2)
    c.single_stage.update(
        dict(num_steps=a["steps"], batch_size=a["batch"], checkpoint_every=a["ckpt"], warmup_steps=2, lr=1e-3,
             end_lr=1e-4, log_every=2, eval_every=0, perceptual_weight=0.0, disc_start=a["steps"] // 2,
             keep_checkpoints=10)
    )  # fmt: skip
    return c
