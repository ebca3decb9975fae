rule extract:
    """Run the model up to the split point on every sample; store the features (Zarr) and the task head."""
    input:
        manifest=f"{RESULTS}/{{task}}/manifest.csv",
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
    benchmark:
        "benchmarks/{task}/extract.tsv"
    conda:
        "../../envs/extract.yaml"
    script:
        "../scripts/extract.py"
