"""The official PyTorch side of ``titok-bench --compare_official``: a standalone script, run by a Python that
has torch (``--official_python``), never imported by titok_jax.

    python official_worker.py --src=PATH_TO_1D_TOKENIZER --threads=2

It builds the official models of bytedance/1d-tokenizer from ``PATH/configs/infer/TiTok/<model>.yaml`` with
random weights and runs one row per request. Requests and replies are JSON lines on stdin/stdout (the
official code's own prints go to stderr):

* ``{"op": "load", "model": "titok_b64", "rows": [...], "batch": {...}, "sampling": {...}, "seed": 0}``
* ``{"op": "call", "row": "tokenize"}`` -> ``{"seconds": ...}`` (one call, timed here)
* ``{"op": "quit"}``

Rows, as the official scripts run them (``torch.no_grad``, eval mode, float32, CPU):
tokenize = ``TiTok.encode(x)[1]["min_encoding_indices"]``; detokenize = ``TiTok.decode_tokens(ids)``;
generate = ``ImageBert/UViTBert.generate(...)`` with the model's official sampler settings;
generate_decode = ``demo_util.sample_fn``: generate, ``decode_tokens``, clamp, uint8 NHWC.

Only the inference files are imported: ``modeling/modules/__init__.py`` also imports the training losses
(torchvision, the diffusion head), so the package ``modeling.modules`` is created from its directory
without running that ``__init__``; every module that is then imported is the official file, unchanged.
"""

import argparse
import importlib.machinery
import importlib.util
import json
import os
import sys
import time

import torch
from omegaconf import OmegaConf


def load_official(src):
    """(TiTok, {model_type: generator class}) from the official files under ``src`` (located at run time,
    hence ``importlib`` rather than import statements)."""
    sys.path.insert(0, src)
    if "modeling.modules" not in sys.modules:
        importlib.import_module("modeling")  # its __init__ is only a licence docstring
        spec = importlib.machinery.ModuleSpec("modeling.modules", None, is_package=True)
        spec.submodule_search_locations = [os.path.join(src, "modeling", "modules")]
        sys.modules["modeling.modules"] = importlib.util.module_from_spec(spec)
    maskgit = importlib.import_module("modeling.maskgit")
    titok = importlib.import_module("modeling.titok")
    return titok.TiTok, {"ViT": maskgit.ImageBert, "UViT": maskgit.UViTBert}


class Worker:
    def __init__(self, src):
        self.src = src
        self.TiTok, self.generators = load_official(src)
        self.calls = {}

    def load(self, model, rows, batch, sampling, seed=0):
        self.calls = {}
        torch.manual_seed(seed)
        config = OmegaConf.load(os.path.join(self.src, "configs", "infer", "TiTok", f"{model}.yaml"))
        vq = config.model.vq_model
        tok = self.TiTok(config).eval().requires_grad_(False)
        size = config.dataset.preprocessing.crop_size
        seq, k = vq.num_latent_tokens, vq.codebook_size
        gen = None
        if "generate" in rows or "generate_decode" in rows:
            gen = self.generators[config.model.generator.model_type](config).eval().requires_grad_(False)

        def generate(b):
            labels = torch.arange(b) % config.model.generator.condition_num_classes
            return gen.generate(
                condition=labels,
                guidance_scale=sampling["guidance_scale"],
                guidance_decay=sampling["guidance_decay"],
                guidance_scale_pow=sampling["guidance_scale_pow"],
                randomize_temperature=sampling["randomize_temperature"],
                softmax_temperature_annealing=sampling["softmax_temperature_annealing"],
                num_sample_steps=sampling["num_steps"],
            )

        def sample_fn(b):  # demo_util.sample_fn without the device moves
            images = tok.decode_tokens(generate(b).view(b, -1))
            images = torch.clamp(images, 0.0, 1.0)
            return (images * 255.0).permute(0, 2, 3, 1).to("cpu", dtype=torch.uint8).numpy()

        for row in rows:
            b = batch[row]
            if row == "tokenize":
                x = torch.rand(b, 3, size, size)
                self.calls[row] = lambda x=x: tok.encode(x)[1]["min_encoding_indices"]
            elif row == "detokenize":
                ids = torch.randint(0, k, (b, seq))
                self.calls[row] = lambda ids=ids: tok.decode_tokens(ids)
            elif row == "generate":
                self.calls[row] = lambda b=b: generate(b)
            elif row == "generate_decode":
                self.calls[row] = lambda b=b: sample_fn(b)
            else:
                raise ValueError(f"unknown row {row!r}")
        return {"model": model, "rows": list(self.calls)}

    def call(self, row):
        with torch.no_grad():
            t0 = time.perf_counter()
            self.calls[row]()
            return {"seconds": time.perf_counter() - t0}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="a checkout of bytedance/1d-tokenizer")
    parser.add_argument("--threads", type=int, required=True, help="torch.set_num_threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = sys.stdout
    sys.stdout = sys.stderr  # anything the official code prints stays off the reply channel

    def reply(msg):
        out.write(json.dumps(msg) + "\n")
        out.flush()

    try:
        worker = Worker(args.src)
    except Exception as e:  # report why (a wrong --src, a missing package) instead of a dead pipe
        reply({"error": f"{type(e).__name__}: {e}"})
        return
    reply({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()})
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg.pop("op")
        if op == "quit":
            break
        try:
            reply(worker.load(**msg) if op == "load" else worker.call(**msg))
        except Exception as e:
            reply({"error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
