rule score:
    """Score every operating point of one codec on one task: BPFP, feature MSE and the task metric of each
    point's reconstruction, one record per point.

    One job scores all points of a task and codec: a point's scoring (the head on a few demo samples) is shorter
    than the job's start-up (torch and the task's model code, about 3 s), so adding a point rescores that codec's
    other points on the task (seconds; their encodings are kept)."""
    input:
        unpack(reference_inputs),
        manifest=f"{RESULTS}/{{task}}/manifest.csv",
        features=f"{RESULTS}/{{task}}/features.zarr",
        head=f"{RESULTS}/{{task}}/head.pt",
        reconstructed=lambda wc: label_outputs(wc, "reconstructed"),
        bitstreams=lambda wc: label_outputs(wc, "bitstreams"),
    output:
        scores=f"{RESULTS}/{{task}}/{{codec}}/scores.json",
        predictions=f"{RESULTS}/{{task}}/{{codec}}/predictions.csv",
    log:
        "logs/{task}/{codec}/score.log",
    benchmark:
        "benchmarks/{task}/{codec}/score.tsv"
    conda:
        "../../envs/extract.yaml"
    threads: config["run"]["threads"]
    resources:
        mem_mb=task_resource("score", "mem_mb"),
        runtime=task_resource("score", "runtime"),
        gpu=task_resource("score", "gpu"),
    params:
        task=lambda wc: wc.task,
        points=lambda wc: label_points(wc.task, wc.codec),
        shards=lambda wc: codec_shards(wc.task, wc.codec),
        reference=lambda wc: task_settings(wc.task)["reference"],
        metric_options=lambda wc: metric_options(wc.task),
        device=config["run"]["device"],
        # the quantizer of its codec counts: scoring computes its quantization error (coding.quantization_errors)
        code=lambda wc: script_code("score.py", wc.task, quantizer=codec_quantizer(wc.codec)),
    script:
        "../scripts/score.py"


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
        code=lambda wc: script_code("score_original.py", wc.task),
    script:
        "../scripts/score_original.py"
