"""The correctness check of a run: the naive servers and the service, over every protocol, must answer the same
inputs alike."""

from __future__ import annotations

import math
from typing import Any

from inputs import InputSet

from .servers import NAIVE, SERVICES


def compare_answers(answers: dict[str, dict[int, dict[int, dict[str, Any]]]], inputs: InputSet, levels: list[int],
                    tolerance: float = 1e-5) -> dict[str, Any]:
    """The servers' answers to the same inputs (read by `protocols.read_answer`): same labels, scores within
    `tolerance`.

    The reference is the first of naive-def, naive-async, service, ... that answered (all cells merged). Every
    other server's answers are compared cell by cell, so the service's answers from batched cells (mixed lengths
    padded together) are checked too: whole /predict answers (label, score, top_k), or for the v2 protocols the
    top-1 label and its probability. A top label may differ only where the reference's two best scores are
    within `tolerance` of each other (a tie).
    """
    present = [name for name in (*NAIVE, *SERVICES) if any(answers.get(name, {}).values())]
    report: dict[str, Any] = {"reference": present[0] if present else None, "tolerance": tolerance, "pairs": {}}
    if len(present) < 2:
        report["ok"] = None
        return report
    reference: dict[int, Any] = {}
    for step_answers in answers[present[0]].values():
        for index, body in step_answers.items():
            reference.setdefault(index, body)
    for name in present[1:]:
        compared, mismatches, max_diff, by_step = 0, [], 0.0, []
        for step, step_answers in sorted(answers[name].items()):
            step_diff, step_compared = 0.0, 0
            for index in sorted(set(step_answers) & set(reference)):
                want, got = reference[index], step_answers[index]
                tie = "top_k" in want and len(want["top_k"]) > 1 and (
                    want["top_k"][0]["score"] - want["top_k"][1]["score"] <= tolerance)
                if "top_k" in got and "top_k" in want:
                    want_scores = {item["label"]: item["score"] for item in want["top_k"]}
                    got_scores = {item["label"]: item["score"] for item in got["top_k"]}
                    diffs = [abs(score - got_scores[label]) for label, score in want_scores.items()
                             if label in got_scores]
                    diff = max(diffs + [abs(want["score"] - got["score"])]) if diffs else math.inf
                    same_shape = set(want) == set(got) and [item["label"] for item in want["top_k"]] == [
                        item["label"] for item in got["top_k"]] or tie
                else:  # a v2 answer: the top-1 label and its probability
                    diff, same_shape = abs(want["score"] - got["score"]), True
                if diff > tolerance or not same_shape or (want["label"] != got["label"] and not tie):
                    item = inputs.items[index]
                    mismatches.append({"input": index, "step": step, "reference": want, name: got,
                                       "text": item if isinstance(item, str) else None})
                step_diff, step_compared = max(step_diff, diff), step_compared + 1
            compared += step_compared
            max_diff = max(max_diff, step_diff)
            by_step.append({"step": step, "concurrency": levels[step], "compared": step_compared,
                            "max_score_diff": step_diff})
        report["pairs"][name] = {"compared": compared, "mismatches": len(mismatches), "max_score_diff": max_diff,
                                 "by_cell": by_step, "examples": mismatches[:3]}
    report["ok"] = all(pair["compared"] and not pair["mismatches"] for pair in report["pairs"].values())
    return report
