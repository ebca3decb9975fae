rule calibrate:
    """Fit the K-means centres of every tensor of a task's features (quantizer kmeans): 256 per tensor on the
    first samples in sample-id order, scikit-learn's KMeans; or check and import a user's mapping folder
    (kmeans8-mapping). One short job per task: it reads at most a few samples."""
    input:
        unpack(calibration_inputs),
    output:
        mapping=directory(f"{RESULTS}/{{task}}/calibration/{{calibration}}"),
    log:
        "logs/{task}/calibration/{calibration}.log",
    benchmark:
        "benchmarks/{task}/calibration/{calibration}.tsv"
    conda:
        "../../envs/codec.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        task="{task}",
        samples=lambda wc: calibration_samples(wc.calibration),
        mapping=lambda wc: user_mapping(wc.task, wc.calibration),
        code=script_code("calibrate.py"),
    script:
        "../scripts/calibrate.py"


rule preprocess:
    """Truncate, quantize (frames quantizedB: B-bit integers) or normalize (frames normalized: [0, 1], for
    learned codecs) and pack every tensor into one 2-D frame per sample, with the task's truncation profile;
    or, for a K-means profile (kmeans8-...), code each value against its tensor's centres (normalized only)."""
    input:
        unpack(preprocess_inputs),
    output:
        frames=directory(f"{RESULTS}/{{task}}/frames/{{profile}}-{{frames}}.zarr"),
    log:
        "logs/{task}/frames/{profile}-{frames}.log",
    benchmark:
        "benchmarks/{task}/frames/{profile}-{frames}.tsv"
    conda:
        "../../envs/codec.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        task="{task}",
        calibration_task=lambda wc: wf.calibration_task(config, wc.task, wc.profile),
        truncation=lambda wc: None if is_kmeans(wc.profile) else task_settings(wc.task)["truncation"][wc.profile],
        input_kind=lambda wc: "normalized" if wc.frames == "normalized" else "quantized",
        bit_depth=lambda wc: int(wc.frames.removeprefix("quantized")) if wc.frames != "normalized" else 10,
        code=lambda wc: script_code("preprocess.py", quantizer=profile_quantizer(wc.profile)),
    script:
        "../scripts/preprocess.py"
