"""The embedded demo: the whole TiTok pipeline at tiny scale on the photographs bundled with
scikit-image, on a 2-core CPU in minutes, fully offline.

teacher (a tiny MaskGIT-VQGAN trained on the photos, since the ImageNet teacher cannot be
downloaded here) -> stage 1 (proxy codes) -> stage 2 (decoder fine-tuning with MSE + hinge GAN +
LeCam) -> pretokenize (every photo and its mirror image as 8 token ids) -> generator (a tiny
MaskGIT generator, one class per photo) -> sample (class-conditional samples, one-jit sampler).
The perceptual loss is off (its ConvNeXt-S ImageNet weights are not available offline); the run
logs that. Each tokenizer stage writes WORKDIR/<stage>/recon_final.png (held-out originals on top,
reconstructions below) and reports PSNR before/after; the generator writes
WORKDIR/generator/samples_final.png (decoded data tokens on top, samples for the same classes
below) and WORKDIR/sample/{tokens.npy, samples.npz, grid.png}.

    python -m titok_jax.main --config=configs/demo.py --workdir=out/demo_run
"""

from titok_jax.config import presets


def get_config(arg=None):
    a = presets.parse_arg(arg, steps_scale=1.0, seed=0)
    config = presets.training_config("titok_tiny", f"seed={a['seed']}")
    config.model_name = "demo (titok_tiny)"
    config.stages = ("teacher", "stage1", "stage2", "pretokenize", "generator", "sample")
    config.data = presets.data_config(source="photos", split="train", eval_split="eval", min_scale=0.125)
    config.eval.batch_size = 8
    # One res block per level (the tiny preset has 2) keeps the conv teacher/pixel decoder CPU-cheap;
    # the teacher doubles as stage 2's pixel decoder, so both must agree.
    config.model.pixel_decoder.num_res_blocks = 1
    config.teacher.model = dict(presets.MODELS["maskgit_vqgan_tiny"].to_dict(), num_res_blocks=1)
    config.teacher.checkpoint = ""  # trained by the 'teacher' stage
    config.discriminator = dict(hidden_channels=32, num_stages=2)

    def scale(n):
        return max(1, int(n * a["steps_scale"]))

    common = dict(batch_size=8, log_every=25, eval_every=0, keep_checkpoints=2, grad_accum_steps=1, ema_decay=0.99)
    # A 256-entry teacher codebook with a dead-code restart every 25 steps (an option, off in the official
    # recipes): without it the tiny teacher uses ~2% of 1024 codes and its proxy codes say little about
    # the image. No GAN for the teacher (CPU time); stage 2 keeps the hinge GAN + LeCam.
    config.teacher.model["codebook_size"] = config.model.pixel_decoder.codebook_size = 256
    config.model.proxy_codebook_size = 256
    config.teacher_train.update(
        dict(num_steps=scale(300), warmup_steps=scale(20), checkpoint_every=scale(100), lr=1e-3, end_lr=1e-4,
             perceptual_weight=0.0, disc_start=scale(300), disc_lr=1e-4, dead_code_restart_every=25, **common)
    )  # fmt: skip
    # Stage 1 restarts its own dead codes every 10 steps onto the batch's latents (noise-free): at init the
    # tiny encoder's l2-normalised latents barely depend on the image, so every photo maps to the same 8
    # ids and the decoder learns only the proxy codes' prior.
    config.stage1.update(
        dict(num_steps=scale(300), warmup_steps=scale(20), checkpoint_every=scale(100), lr=1e-3, end_lr=1e-4,
             dead_code_restart_every=10, dead_code_restart_noise=0.0, **common)
    )  # fmt: skip
    config.stage2.update(
        dict(num_steps=scale(100), warmup_steps=scale(10), checkpoint_every=scale(50), lr=3e-4, end_lr=3e-5,
             perceptual_weight=0.0, disc_start=scale(80), **common)
    )  # fmt: skip
    config.pretokenize.update(dict(shard_size=8, batch_size=8))
    config.generator_train.update(
        dict(num_steps=scale(300), warmup_steps=scale(20), checkpoint_every=scale(100), lr=1e-3, end_lr=1e-4,
             batch_size=8, log_every=50, eval_every=0, keep_checkpoints=2, ema_decay=0.99, weight_decay=0.03)
    )  # fmt: skip
    config.sample.update(dict(classes="0,1,2,3,4,5,6", per_class=2, batch_size=16))
    return config
