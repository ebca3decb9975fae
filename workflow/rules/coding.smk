rule code:
    """Encode one group of samples' frames at one operating point, then decode the bitstreams and post-process
    them back into features; keep the bitstreams, their sidecars and the reconstruction.

    One job encodes and decodes its group: decoding costs less than a job's start-up (measured on the demo: a
    VVenC decode of a cls frame 0.1 s, a job's start-up 0.5 s; a Hyperprior job imports CompressAI, 4.5 s after
    torch, so one job instead of two saves that), and a slow encoder (VTM) still runs one job per group of
    samples (samples_per_job) on a cluster.

    A universal codec's points (one model per lambda for every task) are coded the same way, per task and group:
    a task's coding starts when its frames are ready and its scoring when its coding is done, and adding a
    scenario codes that scenario alone. (One job per lambda for every task paid CompressAI's import once, when
    each job imported it; in the fork server a job starts in 0.3 s. Measured on the demo, whose per-lambda
    jobs waited for the slowest task's frames and held its scoring back to the last two minutes.)"""
    input:
        unpack(coding_inputs),
    output:
        bitstreams=directory(f"{RESULTS}/{{task}}/{{codec}}/{{point}}/bitstreams/{{shard}}"),
        reconstructed=directory(f"{RESULTS}/{{task}}/{{codec}}/{{point}}/reconstructed/{{shard}}.zarr"),
    log:
        "logs/{task}/{codec}/{point}/code-{shard}.log",
    benchmark:
        "benchmarks/{task}/{codec}/{point}/code-{shard}.tsv"
    conda:
        "../../envs/codec.yaml"
    threads: lambda wc: codec_block(wc.codec).get("threads", 1)
    resources:
        mem_mb=coding_resource("mem_mb"),
        runtime=coding_resource("runtime"),
    params:
        codec=lambda wc: codec_kind(wc.codec),
        settings=lambda wc: codec_settings(wc.codec),
        point="{point}",
        samples=lambda wc: sample_bounds(wc.task, wc.codec, wc.shard),
        code=lambda wc: script_code("code.py", task_kind(wc.task), codec_kind(wc.codec), codec_quantizer(wc.codec)),
    script:
        "../scripts/code.py"
