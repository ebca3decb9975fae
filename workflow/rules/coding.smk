rule code:
    """Encode one group of samples' frames at one operating point, then decode the bitstreams and post-process
    them back into features; keep the bitstreams, their sidecars and the reconstruction.

    One job encodes and decodes its group: decoding costs less than a job's start-up (measured on the demo: a
    VVenC decode of a cls frame 0.1 s, a job's start-up 0.5 s; a Hyperprior job imports CompressAI, 4.5 s after
    torch, so one job instead of two saves that), and a slow encoder (VTM) still runs one job per group of
    samples (samples_per_job) on a cluster."""
    input:
        unpack(coding_inputs),
    output:
        # lists of one folder, as rule code_universal's lists of one per task (code.py takes both)
        bitstreams=[directory(f"{RESULTS}/{{task}}/{{codec}}/{{point}}/bitstreams/{{shard}}")],
        reconstructed=[directory(f"{RESULTS}/{{task}}/{{codec}}/{{point}}/reconstructed/{{shard}}.zarr")],
    log:
        "logs/{task}/{codec}/{point}/code-{shard}.log",
    benchmark:
        "benchmarks/{task}/{codec}/{point}/code-{shard}.tsv"
    wildcard_constraints:
        codec=PER_TASK_CODECS_PATTERN,
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
        tasks=["{task}"],
        samples=lambda wc: [sample_bounds(wc.task, wc.codec, wc.shard)],
        code=lambda wc: script_code("code.py", wc.task, codec_kind(wc.codec), codec_quantizer(wc.codec)),
    script:
        "../scripts/code.py"


# Code every running task at one lambda of a universal codec (one model per lambda serves every task): each
# task's frames are encoded and decoded as one group, into the same folders as rule code's
# ({task}/{codec}/{point}/bitstreams/000 and reconstructed/000.zarr).
#
# One job per point for all tasks, because the job's start-up outweighs its coding: measured on the demo, a
# learned code job spent 5 to 6 s importing torch and CompressAI and 1 s exiting against 2 to 4 s of coding a
# task (ELIC) or 1 to 2 s (Hyperprior); 20 jobs (2 codecs x 2 lambdas x 5 tasks) took 217 job-s. Adding a
# lambda runs that lambda's job alone; adding a task recodes every lambda's tasks (the model is loaded once).
use rule code as code_universal with:
    input:
        unpack(universal_coding_inputs),
    output:
        bitstreams=[directory(f"{RESULTS}/{t}/{{codec}}/{{point}}/bitstreams/000") for t in TASKS],
        reconstructed=[directory(f"{RESULTS}/{t}/{{codec}}/{{point}}/reconstructed/000.zarr") for t in TASKS],
    log:
        "logs/universal/{codec}/{point}/code.log",
    benchmark:
        "benchmarks/universal/{codec}/{point}/code.tsv"
    wildcard_constraints:
        codec=UNIVERSAL_PATTERN,
    resources:
        mem_mb=universal_resource("mem_mb"),
        runtime=universal_resource("runtime"),
    params:
        tasks=TASKS,
        samples=lambda wc: [sample_bounds(t, wc.codec, "000") for t in TASKS],
        # code.py runs no task module: its hash is the codec's and quantizer's (any task gives the same)
        code=lambda wc: script_code("code.py", None, codec_kind(wc.codec), codec_quantizer(wc.codec)),
