"""TSM-50 video tower in a fresh inference-only process: wall time, user and system CPU and minor page faults of
each of three forwards (eval, no_grad, 1x3x32x224x224), after the CLI's runtime settings
(:func:`mmv_torch.cli.runtime.enable_fast_cpu_memory`: huge pages, freed memory kept mapped).

Usage (one fresh process per line; numbers go by hand to benchmarks/RESULTS.md):

    python benchmarks/bench_cold_forward.py                                        # the CLI's settings
    MMV_TORCH_KEEP_FREED_MEMORY=0 python benchmarks/bench_cold_forward.py          # huge pages only
    MMV_TORCH_KEEP_FREED_MEMORY=0 THP_MEM_ALLOC_ENABLE=0 python benchmarks/bench_cold_forward.py   # neither
"""

from __future__ import annotations

import json
import os
import resource
import time

from mmv_torch.cli.runtime import enable_fast_cpu_memory


def main() -> None:
    enable_fast_cpu_memory()  # before the first tensor, as the CLI
    import torch

    from mmv_torch.config import get_preset
    from mmv_torch.models.mmv import build_video_backbone

    torch.manual_seed(0)
    cfg = get_preset("mmv_tsm_r50").model
    model = build_video_backbone(cfg.video, cfg.bn).eval()
    x = torch.randn(1, 3, 32, 224, 224)
    rows = []
    with torch.no_grad():
        for _ in range(3):
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            model(x)
            t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
            rows.append({"wall_s": round(t1 - t0, 3), "user_s": round(r1.ru_utime - r0.ru_utime, 3),
                         "sys_s": round(r1.ru_stime - r0.ru_stime, 3), "minor_faults": r1.ru_minflt - r0.ru_minflt})
    settings = {k: os.environ.get(k) for k in ("THP_MEM_ALLOC_ENABLE", "MMV_TORCH_KEEP_FREED_MEMORY",
                                               "MALLOC_MMAP_MAX_")}
    print(json.dumps({"settings": settings, "load": os.getloadavg()[0],
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "forwards": rows}))


if __name__ == "__main__":
    main()
