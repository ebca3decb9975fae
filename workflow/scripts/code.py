"""Encode, decode and post-process groups of frames at one operating point (rules code and code_universal): one
group of one task, or, for a universal codec, every task's samples."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

from lamofc_lib.codecs import get_codec
from lamofc_lib.coding import code_shard
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
params, output = snakemake.params, snakemake.output
block = snakemake.config["codecs"][snakemake.wildcards.codec.split("@")[0]]  # the label's block (a profile's own)
timeout = block.get("timeout")  # not a param: changing it reruns nothing
codec = get_codec(params.codec, params.settings, snakemake.threads, snakemake.input.get("model"), timeout)
groups = zip(params.tasks, params.samples, snakemake.input.frames, output.bitstreams, output.reconstructed, strict=True)
for task, (first, end), frames, bitstreams, reconstructed in groups:
    records = code_shard(frames, bitstreams, reconstructed, codec, params.point, range(first, end))
    log.info(
        "%s %s point %s: %d bitstreams, %d bytes",
        task, params.codec, params.point, len(records), sum(r.bytes for r in records),
    )  # fmt: skip
