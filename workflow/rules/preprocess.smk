rule preprocess:
    """Truncate, quantize (form qB: B-bit integers) or normalize (form float: [0, 1], for learned codecs) and pack
    every feature into one 2-D frame per sample, with the task's truncation profile."""
    input:
        features=f"{RESULTS}/{{task}}/features.zarr",
    output:
        frames=directory(f"{RESULTS}/{{task}}/frames/{{profile}}-{{form}}.zarr"),
    log:
        "logs/{task}/frames/{profile}-{form}.log",
    benchmark:
        "benchmarks/{task}/frames/{profile}-{form}.tsv"
    conda:
        "../../envs/codec.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        task=lambda wc: wc.task,
        truncation=lambda wc: task_settings(wc.task)["truncation"][wc.profile],
        input_kind=lambda wc: "normalized" if wc.form == "float" else "quantized",
        bit_depth=lambda wc: int(wc.form[1:]) if wc.form != "float" else 10,
    script:
        "../scripts/preprocess.py"
