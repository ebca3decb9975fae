rule preprocess:
    """Truncate, quantize (frames quantizedB: B-bit integers) or normalize (frames normalized: [0, 1], for
    learned codecs) and pack every tensor into one 2-D frame per sample, with the task's truncation profile."""
    input:
        features=f"{RESULTS}/{{task}}/features.zarr",
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
        task=lambda wc: wc.task,
        truncation=lambda wc: task_settings(wc.task)["truncation"][wc.profile],
        input_kind=lambda wc: "normalized" if wc.frames == "normalized" else "quantized",
        bit_depth=lambda wc: int(wc.frames.removeprefix("quantized")) if wc.frames != "normalized" else 10,
        code=script_code("preprocess.py"),
    script:
        "../scripts/preprocess.py"
