"""The csr task's prompt protocol, as in the reference implementation: the prompt string of an ARC question and
the letters its answers are named by. The ARC sources write each question's prompt and answer letter into the
manifest (lamofc_lib.sources.arc); the csr task scores the model's next token against those letters."""

from __future__ import annotations

# The csr prompt of the reference implementation (machines/llama3/llama3.py), one string with Llama-3's header
# tokens written out; a text-generation pipeline tokenizes it with the tokenizer's special tokens (Llama-3: BOS).
ARC_PROMPT_BEGIN = (
    "<|start_header_id|>user<|end_header_id|>\n\n"
    "Given the following question and four candidate answers (A, B, C and D), choose the best answer.\n"
)
ARC_PROMPT_END = (
    'Your response should end with "The best answer is [the_answer_letter]" where the [the_answer_letter] is one '
    "of A, B, C or D.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nThe best answer is"
)
# The reference's answer letters: an answer key's position in the choice list (ARC labels some choices 1-4).
ARC_ANSWER_LETTERS = "ABCDE"


def arc_prompt(question: dict) -> str:
    """The reference's csr prompt for one question, quirks included: one `X: text` line per slot A-D from the
    first four choices; a slot without a choice repeats the previous line (3 choices: the C line twice), and
    choices after the fourth are left out."""
    middle = f"Question: {question['stem']}\n"
    line = ""
    for index, letter in enumerate("ABCD"):
        if index < len(question["choices"]):
            line = f"{letter}: {question['choices'][index][1]}\n"
        middle += line
    return ARC_PROMPT_BEGIN + middle + ARC_PROMPT_END
