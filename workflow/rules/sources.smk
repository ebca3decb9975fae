rule manifest:
    """The selected source samples of a task: ids, where to read them, reference labels."""
    output:
        manifest=f"{RESULTS}/{{task}}/manifest.csv",
    log:
        "logs/{task}/manifest.log",
    conda:
        "../../envs/extract.yaml"
    params:
        source=lambda wc: task_settings(wc.task)["source"],
        samples=lambda wc: task_settings(wc.task)["samples"],
    script:
        "../scripts/manifest.py"
