rule extract:
    """Run the model up to the split point on every sample; store the features (Zarr) and the task head.

    Eligible for Snakemake's between-workflow cache (--cache): every setting comes in through params. Snakemake
    forbids a benchmark directive on cached rules, so the extraction time goes to the log instead.
    """
    input:
        manifest=f"{RESULTS}/{{task}}/manifest.csv",
    cache: "omit-software"
    output:
        features=directory(f"{RESULTS}/{{task}}/features.zarr"),
        head=f"{RESULTS}/{{task}}/head.pt",
    params:
        task=lambda wc: wc.task,
        model=lambda wc: task_settings(wc.task)["model"],
        split=lambda wc: task_settings(wc.task)["split"],
        head=lambda wc: task_settings(wc.task)["head"],
        device=config["run"]["device"],
    threads: config["run"]["threads"]
    resources:
        mem_mb=lambda wc: task_settings(wc.task)["resources"]["mem_mb"],
        runtime=lambda wc: task_settings(wc.task)["resources"]["runtime"],
        gpu=lambda wc: task_settings(wc.task)["resources"]["gpu"],
    log:
        "logs/{task}/extract.log",
    conda:
        "../../envs/extract.yaml"
    script:
        "../scripts/extract.py"
