"""LaMoFCBench's language tasks as lm-evaluation-harness tasks (the reference pins lm-eval 0.4.10): the prompt,
the generation settings, the answer filter and the exact-match metric are lm-eval's, built from the settings the
reference's custom tasks give (docs/lamofcbench.md), so a sample is prompted and scored as there.

- Every task: 0-shot `generate_until`, greedy (temperature 0), the chat template applied by the model wrapper.
- The documents are sorted by the reference's prompt length, descending (a stable sort: ties keep the file's
  order), so that a sample index means what it means there; the data come from the user's local copy of the
  hub files (one parquet, json or jsonl file per split), nothing downloaded.
- Scoring counts one filter's answer (the reference reads `exact_match,get_answer`, and GSM8K's
  `exact_match,flexible-extract`), matched with the task's exact-match settings.

The multiple-choice tasks share an instruction to end with "The best answer is [letter]", the prefix "The best
answer is" the generation continues after, stops at a blank line or a full stop, at most 100 tokens, and a
filter that takes the first capital option letter its regex finds, matched ignoring case and punctuation:
- ARC-Challenge (`allenai/ai2_arc`, ARC-Challenge; test, and train for the K-means calibration): the question
  and at most four options A-D; numeric answer keys 1-4 map to A-D. Prompt length: the question's characters
  plus every choice's (a fifth choice counts, though it is never shown).
- HellaSwag (`Rowan/hellaswag`, validation): the context "<activity label>: <ctx_a> <ctx_b, capitalized>" and the
  four endings, both cleaned of WikiHow's bracketed markup; the target the letter of `label`. Prompt length:
  the cleaned context's plus the cleaned endings'.
- TruthfulQA-MC1 (`truthful_qa` multiple_choice, validation): the mc1 choices in the file's order, lettered from
  A (up to Z), so the target is always "A" (the right answer comes first in the data set); the regex takes any
  capital letter. Prompt length: the question's plus the choices'.
- WinoGrande (`winogrande` winogrande_xl, validation): the sentence with its blank and the options A and B; the
  target 'AB'[answer - 1]. Prompt length: the sentence's plus both options'.
GSM8K (`gsm8k` main, test): "Question: <question>\nAnswer:", no prefix, stops at "Question:", "</s>" or
"<|im_end|>", lm-eval's default length (256 tokens); the flexible filter takes the last number of the output,
matched ignoring case, ",", "$", a trailing "." and the target's reasoning up to "#### ". Prompt length: the
question's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# The builder `datasets` reads a data file with, by its suffix.
BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}

EXACT_MATCH = {"metric": "exact_match", "aggregation": "mean", "higher_is_better": True, "ignore_case": True,
               "ignore_punctuation": True}  # fmt: skip


@dataclass(frozen=True)
class LmTask:
    """One language task: lm-eval's settings without the data, the reference's prompt length of a (processed)
    document, the filter whose answer counts, the exact-match settings, and a per-document preparation."""

    settings: dict
    length: Callable[[Mapping], int]
    answer_filter: str = "get_answer"
    metric: dict = field(default_factory=lambda: dict(EXACT_MATCH))
    prepare: Callable[[Mapping], dict] | None = None


def _answer_is(letters: str) -> str:
    return (
        f'Your response should end with "The best answer is [the_answer_letter]" where the [the_answer_letter] is '
        f"{letters}."
    )


def _choice_filter(letters: str) -> list[dict]:
    """The first option letter in the answer (after an optional "[the_answer_letter] is")."""
    pattern = r"(?:\[the_answer_letter\]\s*(?:is\s*)?)?\[?([" + letters + r"])\]?"
    return [{"name": "get_answer", "filter": [{"function": "regex", "regex_pattern": pattern},
                                              {"function": "take_first"}]}]  # fmt: skip


def _choice_task(prompt: str, target: str, letters: str) -> dict:
    return {
        "doc_to_text": prompt,
        "doc_to_target": target,
        "gen_prefix": "The best answer is",
        "generation_kwargs": {"max_gen_toks": 100, "until": ["\n\n", "."]},
        "filter_list": _choice_filter(letters),
    }


def _chars(*parts) -> int:
    return sum(len(p or "") for p in parts)


def clean_wikihow(text: str) -> str:
    """HellaSwag's clean-up of WikiHow text (as lm-eval's own hellaswag task): stripped, " [title]" made a
    sentence end, other bracketed markup removed, a double space made single."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def _hellaswag_doc(doc: Mapping) -> dict:
    context = f"{doc['activity_label']}: {doc['ctx_a']} {doc['ctx_b'].capitalize()}"
    return {**doc, "ctx": clean_wikihow(context), "endings_clean": [clean_wikihow(e) for e in doc["endings"]]}


ARC_PROMPT = (
    "Given the following question and four candidate answers (A, B, C and D), choose the best answer.\n"
    "Question: {{question.strip()}}\nA. {{choices.text[0]}}\nB. {{choices.text[1]}}\nC. {{choices.text[2]}}"
    "{% if choices.text|length > 3 %}\nD. {{choices.text[3]}}{% endif %}\n" + _answer_is("one of A, B, C or D")
)
HELLASWAG_PROMPT = (
    "Given a context and four possible endings (A, B, C and D), choose the most plausible ending.\nContext: {{ctx}}"
    "\nA. {{endings_clean[0]}}\nB. {{endings_clean[1]}}\nC. {{endings_clean[2]}}\nD. {{endings_clean[3]}}\n"
    + _answer_is("one of A, B, C or D")
)
TRUTHFULQA_PROMPT = (
    "Given the following question and candidate answers, choose the most truthful answer.\nQuestion: {{question}}"
    "\n{% for choice in mc1_targets.choices %}{{ 'ABCDEFGHIJKLMNOPQRSTUVWXYZ'[loop.index0] }}. {{choice}}\n"
    "{% endfor %}" + _answer_is("one of the options above")
)
WINOGRANDE_PROMPT = (
    "Fill in the blank (_) with the best option.\nSentence: {{sentence}}\nA. {{option1}}\nB. {{option2}}\n"
    + _answer_is("A or B")
)

TASKS: dict[str, LmTask] = {
    "arc_challenge": LmTask(
        _choice_task(ARC_PROMPT, "{{ 'ABCD'[answerKey|int - 1] if answerKey|string in '1234' else answerKey }}", "A-D"),
        lambda d: _chars(d.get("question"), *(d.get("choices") or {}).get("text") or []),
    ),
    "hellaswag": LmTask(
        _choice_task(HELLASWAG_PROMPT, "{{ 'ABCD'[label|int] }}", "A-D"),
        lambda d: _chars(d.get("ctx"), *d.get("endings_clean") or []),
        prepare=_hellaswag_doc,
    ),
    "truthfulqa_mc1": LmTask(
        _choice_task(TRUTHFULQA_PROMPT, "A", "A-Z"),
        lambda d: _chars(d.get("question"), *(d.get("mc1_targets") or {}).get("choices") or []),
    ),
    "winogrande": LmTask(
        _choice_task(WINOGRANDE_PROMPT, "{{ 'AB'[answer|int - 1] }}", "AB"),
        lambda d: _chars(d.get("sentence"), d.get("option1"), d.get("option2")),
    ),
    "gsm8k": LmTask(
        {
            "doc_to_text": "Question: {{question}}\nAnswer:",
            "doc_to_target": "{{answer}}",
            "generation_kwargs": {"until": ["Question:", "</s>", "<|im_end|>"]},
            "filter_list": [
                {
                    "name": "strict-match",
                    "filter": [
                        {"function": "regex", "regex_pattern": r"#### (\-?[0-9\.\,]+)"},
                        {"function": "take_first"},
                    ],
                },
                {
                    "name": "flexible-extract",
                    "filter": [
                        {"function": "regex", "group_select": -1, "regex_pattern": r"(-?[$0-9.,]{2,})|(-?[0-9]+)"},
                        {"function": "take_first"},
                    ],
                },
            ],
        },
        lambda d: _chars(d.get("question")),
        answer_filter="flexible-extract",
        metric={**EXACT_MATCH, "ignore_punctuation": False, "regexes_to_ignore": [",", r"\$", "(?s).*#### ", r"\.$"]},
    ),
}


def lm_task(name: str) -> LmTask:
    if name not in TASKS:
        raise ValueError(f"language task '{name}' is unknown; known: {', '.join(TASKS)}")
    return TASKS[name]


def sorted_docs(name: str, docs) -> list[dict]:
    """The documents in the reference's order (each prepared as the task prepares it): by prompt length,
    descending; ties in the file's order."""
    spec = lm_task(name)
    prepared = [spec.prepare(d) if spec.prepare else dict(d) for d in docs]
    return sorted(prepared, key=spec.length, reverse=True)


def task_config(name: str, data_file: str | Path, max_gen_toks: int | None = None) -> dict:
    """The lm-eval task configuration of language task `name` on a local data file (its documents as the
    task's test split, sorted as the reference sorts them)."""
    spec = lm_task(name)
    path = Path(data_file)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: data file {path} does not exist")
    if path.suffix not in BUILDERS:
        raise ValueError(f"{name}: data file {path} is not one of {', '.join(BUILDERS)} (a hub data file)")
    settings = spec.settings
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
        "metric_list": [dict(spec.metric)],
        **{k: v for k, v in settings.items() if k != "generation_kwargs"},
        "generation_kwargs": generation,
    }


def build_task(name: str, data_file: str | Path, max_gen_toks: int | None = None):
    """lm-eval's task object of `name` on `data_file` (its documents loaded and sorted)."""
    import os

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval.api.task import ConfigurableTask

    return ConfigurableTask(config=task_config(name, data_file, max_gen_toks))
