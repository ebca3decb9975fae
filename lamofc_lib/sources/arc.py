"""The ARC sources (arc: a jsonl file; arc_demo: the questions shipped with lamofc_lib): one candidate per question,
its text the csr prompt and its label the answer letter (lamofc_lib.tasks.lamofc.csr_prompt)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import pandas as pd

from lamofc_lib.sources.base import Source
from lamofc_lib.sources.manifest import COLUMNS, SourceError

# The csr prompt protocol (lamofc_lib.tasks.lamofc.csr_prompt) is imported inside the functions that apply it: importing
# lamofc_lib.tasks loads the task registry, whose task modules (another package's too) import lamofc_lib.sources,
# which must be whole by then.


def parse_arc_line(line: str, where: str) -> dict:
    """One ARC question, from either the original ARC jsonl or the Hugging Face ai2_arc layout. `letter` is the
    answer's letter by position in the choice list, as in the reference ('ABCDE'[index of the answer key])."""
    from lamofc_lib.tasks.lamofc.csr_prompt import ARC_ANSWER_LETTERS

    try:
        item = json.loads(line.strip())
        question = item["question"]
        if isinstance(question, dict):
            stem = question["stem"]
            choices = [(c["label"], c["text"]) for c in question["choices"]]
        else:
            stem = question
            choices = list(zip(item["choices"]["label"], item["choices"]["text"], strict=True))
        answer = item["answerKey"]
        qid = item["id"]
    except (ValueError, KeyError, TypeError) as err:  # ValueError: bad JSON, or labels and texts of unequal length
        raise SourceError(f"{where}: not an ARC question ({err!r})") from None
    labels = [label for label, _ in choices]
    if answer not in labels:
        raise SourceError(f"{where}: answer key {answer!r} is not among the choice labels {labels}")
    index = labels.index(answer)
    if index >= len(ARC_ANSWER_LETTERS):
        raise SourceError(f"{where}: the answer is choice {index + 1}; the benchmark's letters stop at E")
    return {"id": qid, "stem": stem, "choices": choices, "answer": answer, "letter": ARC_ANSWER_LETTERS[index]}


def _arc_rows(lines: list[str], where: str) -> pd.DataFrame:
    """Every question in file order; `label` is the positional answer letter, `text` the full prompt string
    (whose length in characters is the reference's prompt length)."""
    from lamofc_lib.tasks.lamofc.csr_prompt import arc_prompt

    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        q = parse_arc_line(line, f"{where} line {n}")
        rows.append({"sample_id": q["id"], "source": f"{where}:{n}", "label": q["letter"], "text": arc_prompt(q)})
    return pd.DataFrame(rows, columns=COLUMNS)


def _arc_lines(data: bytes) -> list[str]:
    """Lines as the reference reads them: UTF-8 with undecodable bytes dropped, universal newlines."""
    return data.decode("utf-8", errors="ignore").replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _arc_file(source: Mapping) -> pd.DataFrame:
    path = Path(source["path"])
    if not path.is_file():
        raise SourceError(f"ARC file {path} does not exist")
    rows = _arc_rows(_arc_lines(path.read_bytes()), str(path))
    if not len(rows):
        raise SourceError(f"ARC file {path} holds no questions (it is empty or blank)")
    return rows


def _arc_demo(source: Mapping) -> pd.DataFrame:
    name = "arc_demo_train.jsonl" if source.get("set") == "train" else "arc_demo.jsonl"
    data = resources.files("lamofc_lib").joinpath(f"data/{name}").read_bytes()
    return _arc_rows(_arc_lines(data), f"lamofc_lib/data/{name}")


class ArcFile(Source):
    kind = "arc"
    description = "an ARC-Challenge jsonl file"
    properties = {"path": {"description": "arc: the jsonl file, relative to the working directory or absolute.",
                           "type": ["string", "null"]}}  # fmt: skip
    path_keys = required = ("path",)
    read = staticmethod(_arc_file)


class ArcDemo(Source):
    kind = "arc_demo"
    description = "the multiple-choice questions shipped with lamofc_lib (demo)"
    properties = {"set": {"description": "arc_demo: the shipped evaluation questions (eval) or the separate ones "
                          "for training learned codecs (train).", "enum": ["eval", "train"]}}  # fmt: skip
    read = staticmethod(_arc_demo)
