"""A run's summaries as short text tables: PSNR and codebook use per tokenizer stage, the codebook use of
the pre-tokenized set, and how well the class-conditional samples follow their class."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

TOKENIZER_STAGES = ("teacher", "stage1", "stage2", "single_stage")


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def tokenizer_table(summaries: Sequence[Dict[str, Any]]) -> List[str]:
    """One row per tokenizer stage: held-out PSNR before -> after, distinct ids and perplexity after."""
    rows = [s for s in summaries if s.get("stage") in TOKENIZER_STAGES and "psnr_after" in s]
    if not rows:
        return []
    lines = ["stage | PSNR before | PSNR after (dB) | distinct ids | perplexity"]
    for s in rows:
        psnr = f"{_num(s.get('psnr_before'), '.2f')} | {_num(s.get('psnr_after'), '.2f')}"
        use = f"{_num(s.get('distinct_ids_after'), 'd')} | {_num(s.get('perplexity_after'), '.1f')}"
        lines.append(f"{s['stage']} | {psnr} | {use}")
    return lines


def class_match_table(match: Dict[str, Any], names: Sequence[str] = ()) -> List[str]:
    """The table of ``evaluation.metrics.class_match``; ``names``: one per class (default: the class id)."""

    def name(c: int) -> str:
        return names[c] if c < len(names) else str(c)

    lines = [f"samples nearest (pixel MSE) to their own class's photo: {match['matched']} of "
             f"{len(match['classes'])} classes", "class | photo | samples nearest to it | nearest photo"]  # fmt: skip
    for r in match["classes"]:
        lines.append(f"{r['class']} | {name(r['class'])} | {r['own_nearest']}/{r['samples']} | {name(r['nearest'])}")
    return lines


def format_report(summaries: Sequence[Dict[str, Any]]) -> str:
    """The tables that apply to ``summaries`` (empty string when none does)."""
    lines = tokenizer_table(summaries)
    for s in summaries:
        if s.get("stage") == "pretokenize" and "distinct_ids" in s:
            lines.append(f"pre-tokenized set: {s['num_examples']} sequences, {s['distinct_ids']} distinct ids, "
                         f"perplexity {s['perplexity']:.1f}")  # fmt: skip
        if s.get("stage") == "sample" and "class_match" in s:
            lines += class_match_table(s["class_match"], s.get("class_names") or ())
    lines += [f"{'ok  ' if c['ok'] else 'FAIL'} {c['check']}: {c['value']}" for c in demo_checks(summaries)]
    return "\n".join(lines)


def demo_checks(summaries: Sequence[Dict[str, Any]], max_gap_db: float = 1.0, min_distinct_ids: int = 32,
                min_classes: int = 5) -> List[Dict[str, Any]]:  # fmt: skip
    """What the demo should show, checked on its summaries: every tokenizer stage improves held-out PSNR,
    stage 2 ends within ``max_gap_db`` of the teacher, the pre-tokenized set uses ``min_distinct_ids``
    ids, and the samples of ``min_classes`` classes are nearest to their own photo. One
    ``{'check', 'ok', 'value'}`` per check that applies."""
    by = {s.get("stage"): s for s in summaries}
    checks = []
    for name in TOKENIZER_STAGES:
        s = by.get(name)
        if s and "psnr_after" in s:
            checks.append({"check": f"{name} improves PSNR", "ok": s["psnr_after"] > s["psnr_before"],
                           "value": f"{s['psnr_before']:.2f} -> {s['psnr_after']:.2f} dB"})  # fmt: skip
    if "teacher" in by and "stage2" in by and "psnr_after" in by["stage2"]:
        gap = by["teacher"]["psnr_after"] - by["stage2"]["psnr_after"]
        checks.append({"check": f"stage2 within {max_gap_db:g} dB of the teacher", "ok": gap <= max_gap_db,
                       "value": f"{gap:.2f} dB below"})  # fmt: skip
    if "distinct_ids" in by.get("pretokenize", {}):
        n = by["pretokenize"]["distinct_ids"]
        checks.append({"check": f"pre-tokenized set uses >= {min_distinct_ids} ids", "ok": n >= min_distinct_ids,
                       "value": n})  # fmt: skip
    if "class_match" in by.get("sample", {}):
        n = by["sample"]["class_match"]["matched"]
        checks.append({"check": f">= {min_classes} classes' samples nearest to their own photo",
                       "ok": n >= min_classes, "value": n})  # fmt: skip
    return checks
