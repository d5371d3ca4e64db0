"""The demo's report: codebook use per stage, class match of samples against the class photos, the tables."""

import numpy as np
import pytest

from titok_jax.evaluation.metrics import class_match
from titok_jax.steps import report


def test_class_match_counts_samples_nearest_to_their_own_reference():
    rng = np.random.default_rng(0)
    refs = rng.uniform(size=(3, 8, 8, 3))
    noise = lambda: rng.normal(scale=0.05, size=(8, 8, 3))  # noqa: E731
    # class 0: itself and its mirror image; class 1: one right, one like class 2; class 2: both like class 0
    samples = np.stack([refs[0] + noise(), refs[0][:, ::-1] + noise(),
                        refs[1] + noise(), refs[2] + noise(),
                        refs[0] + noise(), refs[0] + noise()])  # fmt: skip
    labels = np.array([0, 0, 1, 1, 2, 2])
    m = class_match(samples, labels, refs)
    assert m["classes"] == [
        {"class": 0, "samples": 2, "own_nearest": 2, "nearest": 0},
        {"class": 1, "samples": 2, "own_nearest": 1, "nearest": 1},
        {"class": 2, "samples": 2, "own_nearest": 0, "nearest": 0},
    ]
    assert m["matched"] == 1  # a class counts when most of its samples are nearest to its own photo
    with pytest.raises(ValueError):
        class_match(samples, labels, refs[:, :4])
    with pytest.raises(ValueError):
        class_match(samples, labels + 1, refs)


def test_report_tables():
    summaries = [
        {"stage": "teacher", "psnr_before": 6.5, "psnr_after": 16.0, "distinct_ids_after": 90,
         "perplexity_after": 60.0},
        {"stage": "stage1", "psnr_before": 12.0, "psnr_after": 15.5, "distinct_ids_after": 40,
         "perplexity_after": 30.2},
        {"stage": "pretokenize", "num_examples": 14, "distinct_ids": 37, "perplexity": 25.0},
        {"stage": "sample", "class_names": ["astronaut", "coffee"],
         "class_match": {"matched": 1, "classes": [{"class": 0, "samples": 2, "own_nearest": 2, "nearest": 0},
                                                   {"class": 1, "samples": 2, "own_nearest": 0, "nearest": 0}]}},
    ]  # fmt: skip
    lines = report.format_report(summaries).splitlines()
    assert lines[1] == "teacher | 6.50 | 16.00 | 90 | 60.0"
    assert lines[2] == "stage1 | 12.00 | 15.50 | 40 | 30.2"
    assert lines[3] == "pre-tokenized set: 14 sequences, 37 distinct ids, perplexity 25.0"
    assert lines[4].endswith(": 1 of 2 classes")
    assert lines[6:8] == ["0 | astronaut | 2/2 | astronaut", "1 | coffee | 0/2 | astronaut"]
    assert lines[8:] == [
        "ok   teacher improves PSNR: 6.50 -> 16.00 dB",
        "ok   stage1 improves PSNR: 12.00 -> 15.50 dB",
        "ok   pre-tokenized set uses >= 32 ids: 37",
        "FAIL >= 5 classes' samples nearest to their own photo: 1",
    ]
    assert report.format_report([{"stage": "generator", "loss_after": 1.0}]) == ""


def test_demo_checks():
    summaries = [
        {"stage": "teacher", "psnr_before": 6.5, "psnr_after": 16.0},
        {"stage": "stage1", "psnr_before": 12.0, "psnr_after": 11.9},
        {"stage": "stage2", "psnr_before": 12.0, "psnr_after": 15.2},
        {"stage": "pretokenize", "distinct_ids": 31},
        {"stage": "sample", "class_match": {"matched": 5, "classes": []}},
    ]
    checks = {c["check"]: c["ok"] for c in report.demo_checks(summaries)}
    assert checks == {
        "teacher improves PSNR": True,
        "stage1 improves PSNR": False,
        "stage2 improves PSNR": True,
        "stage2 within 1 dB of the teacher": True,
        "pre-tokenized set uses >= 32 ids": False,
        ">= 5 classes' samples nearest to their own photo": True,
    }
    assert not report.demo_checks(summaries, max_gap_db=0.5)[3]["ok"]
