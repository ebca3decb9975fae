rule extract:
    """Run the model up to the split point on every sample; store the features (Zarr) and the task head.

    Eligible for Snakemake's between-workflow cache (--cache): every setting comes in through params. Snakemake
    forbids a benchmark directive on cached rules, so the extraction time goes to the log instead.
    """
    input:
        manifest=f"{RESULTS}/{{task}}/manifest.csv",
        head_checkpoint=head_checkpoint,
    output:
        features=directory(f"{RESULTS}/{{task}}/features.zarr"),
        head=f"{RESULTS}/{{task}}/head.pt",
    log:
        "logs/{task}/extract.log",
    cache: "omit-software"
    conda:
        "../../envs/extract.yaml"
    threads: config["run"]["threads"]
    resources:
        mem_mb=lambda wc: task_settings(wc.task)["resources"]["extract"]["mem_mb"],
        runtime=lambda wc: task_settings(wc.task)["resources"]["extract"]["runtime"],
        gpu=lambda wc: task_settings(wc.task)["resources"]["extract"]["gpu"],
    params:
        task=lambda wc: wc.task,
        model=lambda wc: task_settings(wc.task)["model"],
        split=lambda wc: task_settings(wc.task).get("split"),
        head=lambda wc: task_settings(wc.task)["head"],
        device=config["run"]["device"],
        code=lambda wc: code_version(*TASK_CODE[wc.task], "sources.py", "store.py", "io.py"),
    script:
        "../scripts/extract.py"
