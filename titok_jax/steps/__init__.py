"""Steps of a run that are not training loops, each ``run(run_config, workdir) -> summary``:
``pretokenize`` (tokens for the generator), ``sample`` (class-conditional samples), ``evaluate``
(rFID / gFID / IS / PSNR / SSIM / codebook usage), ``linear_probe``. A finished step writes
``WORKDIR/<step>/DONE.json`` (``titok_jax.steps.runner``) and is skipped on reruns."""
