rule score:
    """Score the reconstructed features of one operating point: BPFP, feature MSE, task metric."""
    input:
        unpack(reference_inputs),
        manifest=f"{RESULTS}/{{task}}/manifest.csv",
        features=f"{RESULTS}/{{task}}/features.zarr",
        head=f"{RESULTS}/{{task}}/head.pt",
        reconstructed=f"{RESULTS}/{{task}}/{{codec}}/{{point}}/reconstructed.zarr",
        bitstreams=bitstream_dirs,
    output:
        scores=f"{RESULTS}/{{task}}/{{codec}}/{{point}}/scores.json",
        predictions=f"{RESULTS}/{{task}}/{{codec}}/{{point}}/predictions.csv",
    log:
        "logs/{task}/{codec}/{point}/score.log",
    benchmark:
        "benchmarks/{task}/{codec}/{point}/score.tsv"
    conda:
        "../../envs/extract.yaml"
    threads: config["run"]["threads"]
    resources:
        mem_mb=task_resource("score", "mem_mb"),
        runtime=task_resource("score", "runtime"),
        gpu=task_resource("score", "gpu"),
    params:
        task=lambda wc: wc.task,
        reference=lambda wc: task_settings(wc.task)["reference"],
        metric_options=lambda wc: metric_options(wc.task),
        device=config["run"]["device"],
        code=lambda wc: script_code("score.py", wc.task),
    script:
        "../scripts/score.py"


use rule score as score_original with:
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
