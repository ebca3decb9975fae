"""Encode, decode and post-process one group of a task's frames at one operating point (rule code)."""

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
first, end = params.samples
records = code_shard(
    snakemake.input.frames, output.bitstreams, output.reconstructed, codec, params.point, range(first, end)
)
log.info(
    "%s %s point %s: %d bitstreams, %d bytes",
    snakemake.wildcards.task, params.codec, params.point, len(records), sum(r.bytes for r in records),
)  # fmt: skip
