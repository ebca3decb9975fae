"""Decode and post-process every bitstream of one operating point (rule decode)."""

import pandas as pd

from lamofc_lib.codecs import get_codec
from lamofc_lib.coding import decode_point
from lamofc_lib.io import atomic_path
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
params = snakemake.params
timeout = snakemake.config["codecs"][params.codec].get("timeout")  # not a param: changing it reruns nothing
codec = get_codec(params.codec, params.settings, snakemake.threads, snakemake.input.get("model"), timeout)
timings = decode_point(snakemake.input.bitstreams, snakemake.output.reconstructed, codec, samples=params.samples)
with atomic_path(snakemake.output.timing) as tmp:
    pd.DataFrame(timings).to_csv(tmp, index=False)
log.info("decoded %d bitstreams", len(timings))
