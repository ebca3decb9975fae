rule score:
    """Score every operating point of one codec label on one task: BPFP, feature MSE and the task metric of each
    point's reconstruction, one record per point.

    One job scores all points of a task and label: a point's scoring (the head on a few demo samples) is shorter
    than the job's start-up (torch and the task's model code, about 3 s), so adding a point rescores that label's
    other points on the task (seconds; their encodings are kept). With run.score_jobs "task", rule score_task
    scores the run.codecs labels instead, and this rule the generalizability labels alone."""
    input:
        unpack(reference_inputs),
        manifest=f"{RESULTS}/{{task}}/manifest.csv",
        features=f"{RESULTS}/{{task}}/features.zarr",
        head=f"{RESULTS}/{{task}}/head.pt",
        reconstructed=lambda wc: label_outputs(wc.task, [wc.codec], "reconstructed"),
        bitstreams=lambda wc: label_outputs(wc.task, [wc.codec], "bitstreams"),
    output:
        # lists of one file, as rule score_task's lists of one per label (score.py takes both)
        scores=[f"{RESULTS}/{{task}}/{{codec}}/scores.json"],
        predictions=[f"{RESULTS}/{{task}}/{{codec}}/predictions.csv"],
    log:
        "logs/{task}/{codec}/score.log",
    benchmark:
        "benchmarks/{task}/{codec}/score.tsv"
    wildcard_constraints:
        codec=PER_LABEL_SCORES_PATTERN,
    conda:
        "../../envs/extract.yaml"
    threads: config["run"]["threads"]
    resources:
        mem_mb=task_resource("score", "mem_mb"),
        runtime=task_resource("score", "runtime"),
        gpu=task_resource("score", "gpu"),
    params:
        task="{task}",
        kind=lambda wc: task_kind(wc.task),
        labels=lambda wc: scored_labels(wc.task, wc.codec),
        reference=lambda wc: task_settings(wc.task)["reference"],
        metric_options=lambda wc: metric_options(wc.task),
        tensor_accuracy=config["report"]["tensor_accuracy"],
        device=config["run"]["device"],
        # the quantizer of its codec counts: scoring computes its quantization error (coding.quantization_errors)
        code=lambda wc: script_code("score.py", task_kind(wc.task), quantizer=codec_quantizer(wc.codec)),
    script:
        "../scripts/score.py"


# Score every operating point of every run.codecs label on one task (run.score_jobs: task), into the same
# files as rule score: one job per task loads the task's model code and head once.
#
# Measured on the demo, 22 score jobs (one per task and label, 2 of them generalizability's) spent 74 s in
# start-up and imports (torch and the task's model code: 1.5 s for cls, seg and dpt, 4 s for csr's
# transformers, 7.5 s for tti's diffusers and InceptionV3) against 49 s of scoring; the 5 score_task jobs take
# 55 job-s. The cost: adding a point or changing a codec rescores every label's points on the task, where rule
# score rescores that label's alone; a paper-size run (minutes of scoring per point) keeps run.score_jobs: label.
use rule score as score_task with:
    input:
        unpack(reference_inputs),
        manifest=f"{RESULTS}/{{task}}/manifest.csv",
        features=f"{RESULTS}/{{task}}/features.zarr",
        head=f"{RESULTS}/{{task}}/head.pt",
        reconstructed=lambda wc: label_outputs(wc.task, RUN_LABELS, "reconstructed"),
        bitstreams=lambda wc: label_outputs(wc.task, RUN_LABELS, "bitstreams"),
    output:
        scores=[f"{RESULTS}/{{task}}/{c}/scores.json" for c in RUN_LABELS],
        predictions=[f"{RESULTS}/{{task}}/{c}/predictions.csv" for c in RUN_LABELS],
    log:
        "logs/{task}/score.log",
    benchmark:
        "benchmarks/{task}/score.tsv"
    wildcard_constraints:
        task=SCORE_TASK_PATTERN,
    params:
        labels=lambda wc: scored_labels(wc.task),
        code=lambda wc: script_code("score.py", task_kind(wc.task)),  # every label's quantizer


rule score_original:
    """Score the uncompressed features with the task head (the reference outputs of the coded points)."""
    input:
        manifest=f"{RESULTS}/{{task}}/manifest.csv",
        features=f"{RESULTS}/{{task}}/features.zarr",
        head=f"{RESULTS}/{{task}}/head.pt",
    output:
        scores=f"{RESULTS}/{{task}}/original/scores.json",
        predictions=f"{RESULTS}/{{task}}/original/predictions.csv",
        outputs=f"{RESULTS}/{{task}}/original/outputs.npz",
    log:
        "logs/{task}/original/score.log",
    benchmark:
        "benchmarks/{task}/original/score.tsv"
    priority: 1  # as rule head: it gates the task's scoring
    conda:
        "../../envs/extract.yaml"
    threads: config["run"]["threads"]
    resources:
        mem_mb=task_resource("score", "mem_mb"),
        runtime=task_resource("score", "runtime"),
        gpu=task_resource("score", "gpu"),
    params:
        task="{task}",
        kind=lambda wc: task_kind(wc.task),
        reference=lambda wc: task_settings(wc.task)["reference"],
        metric_options=lambda wc: metric_options(wc.task),
        device=config["run"]["device"],
        code=lambda wc: script_code("score_original.py", task_kind(wc.task)),
    script:
        "../scripts/score_original.py"
