"""Encode one group of frames at one operating point (rule encode)."""

from lamofc_lib.codecs import get_codec
from lamofc_lib.coding import encode_shard, shard_samples
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
params = snakemake.params
timeout = snakemake.config["codecs"][params.codec].get("timeout")  # not a param: changing it reruns nothing
codec = get_codec(params.codec, params.settings, snakemake.threads, snakemake.input.get("model"), timeout)
indices = shard_samples(snakemake.wildcards.shard, params.samples, params.settings["samples_per_job"])
records = encode_shard(snakemake.input.frames, snakemake.output.bitstreams, codec, params.point, indices)
log.info(
    "%s point %s: %d bitstreams, %d bytes", params.codec, params.point, len(records), sum(r.bytes for r in records)
)
