"""LaMoFCBench's language scenarios (section 1, rows 6-10): lm-evaluation-harness tasks whose answers are generated
from the decoded hidden state and caches of a causal LM split after its decoder layer 4."""
