"""Encode, decode and post-process one group of frames at one operating point (rule code)."""

from lamofc_lib.codecs import get_codec
from lamofc_lib.coding import code_shard, shard_samples
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
params, output = snakemake.params, snakemake.output
timeout = snakemake.config["codecs"][params.codec].get("timeout")  # not a param: changing it reruns nothing
codec = get_codec(params.codec, params.settings, snakemake.threads, snakemake.input.get("model"), timeout)
indices = shard_samples(snakemake.wildcards.shard, params.samples, params.settings["samples_per_job"])
records = code_shard(snakemake.input.frames, output.bitstreams, output.reconstructed, codec, params.point, indices)
log.info(
    "%s point %s: %d bitstreams, %d bytes", params.codec, params.point, len(records), sum(r.bytes for r in records)
)
