rule encode:
    """Encode one group of samples' frames at one operating point; keep bitstreams and sidecars."""
    input:
        unpack(coding_inputs),
    output:
        bitstreams=directory(f"{RESULTS}/{{task}}/{{codec}}/{{point}}/bitstreams/{{shard}}"),
    log:
        "logs/{task}/{codec}/{point}/encode-{shard}.log",
    benchmark:
        "benchmarks/{task}/{codec}/{point}/encode-{shard}.tsv"
    conda:
        "../../envs/codec.yaml"
    threads: lambda wc: codec_block(wc.codec).get("threads", 1)
    resources:
        mem_mb=coding_resource("encode", "mem_mb"),
        runtime=coding_resource("encode", "runtime"),
    params:
        codec=lambda wc: codec_name(wc.codec),
        settings=lambda wc: codec_settings(wc.codec),
        point=lambda wc: wc.point,
        samples=lambda wc: task_settings(wc.task)["samples"],
        code=lambda wc: script_code("encode.py", wc.task, codec_name(wc.codec)),
    script:
        "../scripts/encode.py"


rule decode:
    """Decode every bitstream of one operating point and post-process it back into features."""
    input:
        unpack(model_inputs),
        bitstreams=bitstream_dirs,
    output:
        reconstructed=directory(f"{RESULTS}/{{task}}/{{codec}}/{{point}}/reconstructed.zarr"),
        timing=f"{RESULTS}/{{task}}/{{codec}}/{{point}}/decode_seconds.csv",
    log:
        "logs/{task}/{codec}/{point}/decode.log",
    benchmark:
        "benchmarks/{task}/{codec}/{point}/decode.tsv"
    conda:
        "../../envs/codec.yaml"
    # A learned codec decodes with the encoder's thread count (see codecs/hyperprior/codec.py).
    threads: lambda wc: codec_block(wc.codec).get("threads", 1) if is_trained(wc.codec) else 1
    resources:
        mem_mb=coding_resource("decode", "mem_mb"),
        runtime=coding_resource("decode", "runtime"),
    params:
        codec=lambda wc: codec_name(wc.codec),
        settings=lambda wc: codec_settings(wc.codec),
        samples=lambda wc: task_settings(wc.task)["samples"],
        code=lambda wc: script_code("decode.py", wc.task, codec_name(wc.codec)),
    script:
        "../scripts/decode.py"
