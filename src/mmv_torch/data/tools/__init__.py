"""Offline data tools behind ``mmv-torch data ...``: ``check`` (decode every file, repair a manifest),
``bench`` (the input pipeline against the decode limit), ``transcode``, ``frames`` (middle frames for
image probes) and ``shard`` (the tar-shard writer). The input pipeline never imports them."""

from mmv_torch.data.tools.bench import run_data_bench
from mmv_torch.data.tools.check import check_path, run_check
from mmv_torch.data.tools.frames import write_middle_frames
from mmv_torch.data.tools.shard_writer import run_shard, write_shards
from mmv_torch.data.tools.transcode import run_transcode, transcode_file

__all__ = ["check_path", "run_check", "run_data_bench", "run_shard", "run_transcode", "transcode_file",
           "write_middle_frames", "write_shards"]
