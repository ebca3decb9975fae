rule candidates:
    """Every sample the task's source offers, in the source's order: the pool that selection picks from."""
    output:
        candidates=f"{RESULTS}/{{task}}/candidates.csv",
    log:
        "logs/{task}/candidates.log",
    benchmark:
        "benchmarks/{task}/candidates.tsv"
    conda:
        "../../envs/extract.yaml"
    params:
        source=lambda wc: task_settings(wc.task)["source"],
        code=lambda wc: script_code("candidates.py", task_kind(wc.task)),  # the task names its source readers
    script:
        "../scripts/candidates.py"


rule select:
    """The benchmark's samples of a task (its manifest) and the selection report: the configured policy (the
    reference's by default; the cls and csr policies run the uncompressed model and its head on the
    candidates), an explicit sample list, or the samples whose feature files exist (features_from).

    The head is an `ancient` input: a selection is made with the head present when it runs, and swapping the
    head later keeps the benchmark's samples (force a new selection with --forcerun select). Eligible for
    Snakemake's between-workflow cache (--cache): every setting comes in through params."""
    input:
        unpack(selection_inputs),
    output:
        manifest=f"{RESULTS}/{{task}}/manifest.csv",
        report=f"{RESULTS}/{{task}}/selection/report.csv",
        summary=f"{RESULTS}/{{task}}/selection/summary.json",
    log:
        "logs/{task}/select.log",
    cache: "omit-software"
    conda:
        "../../envs/extract.yaml"
    threads: lambda wc: config["run"]["threads"] if selection_needs_model(wc.task) else 1
    resources:
        mem_mb=lambda wc, attempt: retried("mem_mb", selection_resource(wc.task, "mem_mb"), attempt),
        runtime=lambda wc, attempt: retried("runtime", selection_resource(wc.task, "runtime"), attempt),
        gpu=lambda wc: selection_resource(wc.task, "gpu"),
    params:
        task="{task}",
        kind=lambda wc: task_kind(wc.task),
        policy=lambda wc: selection_label(wc.task),
        settings=lambda wc: selection_settings(wc.task),
        model=lambda wc: model_settings(wc.task) if selection_needs_model(wc.task) else None,
        split=lambda wc: task_settings(wc.task).get("split") if selection_needs_model(wc.task) else None,
        device=lambda wc: config["run"]["device"] if selection_needs_model(wc.task) else "cpu",
        code=lambda wc: script_code("select.py", task_kind(wc.task)),
    script:
        "../scripts/select.py"
