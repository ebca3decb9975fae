"""LaMoFCBench's language tasks as lm-evaluation-harness tasks (the reference pins lm-eval 0.4.10): the prompt,
the generation settings, the answer filter and the exact-match metric are lm-eval's, built from the settings the
reference's custom tasks give (docs/lamofcbench.md), so a sample is prompted and scored as there.

- Every task: 0-shot `generate_until`, greedy (temperature 0), the chat template applied by the model wrapper.
- The documents are sorted by the reference's prompt length, descending (a stable sort: ties keep the file's
  order), so that a sample index means what it means there; the data come from the user's local copy of the
  hub files (one parquet, json or jsonl file per split), nothing downloaded.
- Scoring counts the filtered answer's exact match (the reference reads `exact_match,get_answer`).

ARC-Challenge (`allenai/ai2_arc`, ARC-Challenge; the test split, and train for the K-means calibration): the
question and at most four options A-D, an instruction to end with "The best answer is [letter]"; generation
continues after the prefix "The best answer is", stops at a blank line or a full stop, at most 100 tokens; the
answer is the first letter A-D the filter's regex finds; numeric answer keys 1-4 map to A-D. The prompt length
is the question's characters plus every choice's (a fifth choice counts, though it is never shown).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

# The builder `datasets` reads a data file with, by its suffix.
BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def _arc_length(doc: Mapping) -> int:
    return len(doc.get("question") or "") + sum(len(c) for c in (doc.get("choices") or {}).get("text") or [])


ARC_PROMPT = (
    "Given the following question and four candidate answers (A, B, C and D), choose the best answer.\n"
    "Question: {{question.strip()}}\nA. {{choices.text[0]}}\nB. {{choices.text[1]}}\nC. {{choices.text[2]}}"
    "{% if choices.text|length > 3 %}\nD. {{choices.text[3]}}{% endif %}\n"
    'Your response should end with "The best answer is [the_answer_letter]" where the [the_answer_letter] is one '
    "of A, B, C or D."
)

# name -> (lm-eval task settings without the data, the reference's prompt length of a document)
TASKS: dict[str, tuple[dict, Callable[[Mapping], int]]] = {
    "arc_challenge": (
        {
            "doc_to_text": ARC_PROMPT,
            "gen_prefix": "The best answer is",
            "doc_to_target": "{{ 'ABCD'[answerKey|int - 1] if answerKey|string in '1234' else answerKey }}",
            "generation_kwargs": {"max_gen_toks": 100, "until": ["\n\n", "."]},
            "filter_list": [
                {
                    "name": "get_answer",
                    "filter": [
                        {
                            "function": "regex",
                            "regex_pattern": r"(?:\[the_answer_letter\]\s*(?:is\s*)?)?\[?([A-D])\]?",
                        },
                        {"function": "take_first"},
                    ],
                }
            ],
        },
        _arc_length,
    ),
}

EXACT_MATCH = {"metric": "exact_match", "aggregation": "mean", "higher_is_better": True, "ignore_case": True,
               "ignore_punctuation": True}  # fmt: skip


def sorted_docs(name: str, docs) -> list[dict]:
    """The documents in the reference's order: by prompt length, descending; ties in the file's order."""
    length = TASKS[name][1]
    return sorted((dict(d) for d in docs), key=length, reverse=True)


def task_config(name: str, data_file: str | Path, max_gen_toks: int | None = None) -> dict:
    """The lm-eval task configuration of language task `name` on a local data file (its documents as the
    task's test split, sorted as the reference sorts them)."""
    if name not in TASKS:
        raise ValueError(f"language task '{name}' is unknown; known: {', '.join(TASKS)}")
    path = Path(data_file)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: data file {path} does not exist")
    if path.suffix not in BUILDERS:
        raise ValueError(f"{name}: data file {path} is not one of {', '.join(BUILDERS)} (a hub data file)")
    settings, _ = TASKS[name]
    generation = {**settings["generation_kwargs"], "do_sample": False, "temperature": 0.0}
    if max_gen_toks is not None:
        generation["max_gen_toks"] = int(max_gen_toks)

    def process_docs(dataset):
        from datasets import Dataset

        return Dataset.from_list(sorted_docs(name, dataset))

    return {
        "task": f"lamofc_{name}",
        "dataset_path": BUILDERS[path.suffix],
        "dataset_kwargs": {"data_files": {"test": str(path)}},
        "test_split": "test",
        "process_docs": process_docs,
        "output_type": "generate_until",
        "num_fewshot": 0,
        "metric_list": [dict(EXACT_MATCH)],
        **{k: v for k, v in settings.items() if k != "generation_kwargs"},
        "generation_kwargs": generation,
    }


def build_task(name: str, data_file: str | Path, max_gen_toks: int | None = None):
    """lm-eval's task object of `name` on `data_file` (its documents loaded and sorted)."""
    import os

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval.api.task import ConfigurableTask

    return ConfigurableTask(config=task_config(name, data_file, max_gen_toks))
