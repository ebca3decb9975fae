rule preprocess:
    """Truncate, quantize (or normalize) and pack every feature into one 2-D frame per sample."""
    input:
        features=f"{RESULTS}/{{task}}/features.zarr",
    output:
        frames=directory(f"{RESULTS}/{{task}}/{{codec}}/frames.zarr"),
    log:
        "logs/{task}/{codec}/preprocess.log",
    benchmark:
        "benchmarks/{task}/{codec}/preprocess.tsv"
    conda:
        "../../envs/codec.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        task=lambda wc: wc.task,
        codec=lambda wc: wc.codec,
        truncation=lambda wc: task_settings(wc.task)["truncation"][codec_settings(wc.codec)["truncation"]],
        bit_depth=lambda wc: codec_settings(wc.codec).get("bit_depth", 10),
    script:
        "../scripts/preprocess.py"
