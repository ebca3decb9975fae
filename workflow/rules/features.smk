rule convert_model:
    """A GGUF model (tasks.<task>.model.gguf_file) dequantized once into a plain transformers folder, shared by
    the tasks that run it: the jobs that run the model (selection, head, both extractions, the language
    scenarios' scoring) load it in 0.2 s instead of dequantizing the GGUF file in each (19 s for the demo's
    SmolLM2-135M); the weights, tokens and logits are equal."""
    output:
        model=directory(f"{RESULTS}/models/gguf/{{folder}}"),
    log:
        "logs/models/gguf/{folder}/convert_model.log",
    benchmark:
        "benchmarks/models/gguf/{folder}/convert_model.tsv"
    wildcard_constraints:
        folder=r"[^/]+/[^/]+",
    conda:
        "../../envs/extract.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        model=lambda wc: gguf_model(wc.folder),
        code=script_code("convert_model.py", "csr"),
    script:
        "../scripts/convert_model.py"


rule head:
    """The task head (checked checkpoint or seeded random head) with the parts of the model it applies: apart
    from the features, so a new head checkpoint reruns scoring, not extraction."""
    input:
        unpack(converted_model),
        head_checkpoint=head_checkpoint,
    output:
        head=f"{RESULTS}/{{task}}/head.pt",
    log:
        "logs/{task}/head.log",
    benchmark:
        "benchmarks/{task}/head.tsv"
    # a second's job that gates its task's scoring: run as soon as it can (in a demo run the scheduler left two
    # language tasks' heads to the last minute, and their scoring closed the run with one core idle)
    priority: 1
    conda:
        "../../envs/extract.yaml"
    threads: config["run"]["threads"]
    resources:
        mem_mb=task_resource("extract", "mem_mb"),
        runtime=task_resource("extract", "runtime"),
        gpu=task_resource("extract", "gpu"),
    params:
        task="{task}",
        kind=lambda wc: task_kind(wc.task),
        model=lambda wc: model_settings(wc.task),
        split=lambda wc: task_settings(wc.task).get("split"),
        head=lambda wc: task_settings(wc.task)["head"],
        device=config["run"]["device"],
        code=lambda wc: script_code("head.py", task_kind(wc.task)),
    script:
        "../scripts/head.py"


rule extract:
    """Run the model up to the split point on every selected sample; store the features (Zarr).

    Eligible for Snakemake's between-workflow cache (--cache): every setting comes in through params. Snakemake
    forbids a benchmark directive on cached rules, so the extraction time goes to the log instead.
    """
    input:
        unpack(converted_model),
        manifest=f"{RESULTS}/{{task}}/manifest.csv",
    output:
        features=directory(f"{RESULTS}/{{task,{EXTRACTED_TASKS}}}/features.zarr"),
    log:
        "logs/{task}/extract.log",
    cache: "omit-software"
    conda:
        "../../envs/extract.yaml"
    threads: config["run"]["threads"]
    resources:
        mem_mb=task_resource("extract", "mem_mb"),
        runtime=task_resource("extract", "runtime"),
        gpu=task_resource("extract", "gpu"),
    params:
        task="{task}",
        kind=lambda wc: task_kind(wc.task),
        model=lambda wc: model_settings(wc.task),
        split=lambda wc: task_settings(wc.task).get("split"),
        device=config["run"]["device"],
        code=lambda wc: script_code("extract.py", task_kind(wc.task)),
    script:
        "../scripts/extract.py"


rule import_features:
    """Features from files (tasks.<task>.features_from): one .npy per selected sample, named as the reference
    implementation names them, checked against the task's layout and stored like extracted features."""
    input:
        manifest=f"{RESULTS}/{{task}}/manifest.csv",
        files=feature_file_inputs,
    output:
        features=directory(f"{RESULTS}/{{task,{IMPORTED_TASKS}}}/features.zarr"),
    log:
        "logs/{task}/import_features.log",
    benchmark:
        "benchmarks/{task}/import_features.tsv"
    conda:
        "../../envs/extract.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        task="{task}",
        kind=lambda wc: task_kind(wc.task),
        folder=lambda wc: task_settings(wc.task)["features_from"],
        model=lambda wc: model_settings(wc.task),
        split=lambda wc: task_settings(wc.task).get("split"),
        code=lambda wc: script_code("import_features.py", task_kind(wc.task)),
    script:
        "../scripts/import_features.py"
