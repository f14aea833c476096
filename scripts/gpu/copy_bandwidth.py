#!/usr/bin/env python3
"""Reference copy rates on this machine (PyTorch, 1 GiB, mean of 10 after 3 warm-ups):
GPU 0 -> GPU 1 (peer, NVLink), GPU 0 -> GPU 0, GPU 0 -> pinned host and -> pageable host.
Prints one line per copy and, with --json FILE, writes them. The KV transfer figures
of `cpserve bench` (KV transfer GB/s) are read beside these."""
import argparse
import json
import time

import torch


def rate(dst, src, n=10):
    for _ in range(3):
        dst.copy_(src, non_blocking=True)
    for d in range(torch.cuda.device_count()):
        torch.cuda.synchronize(d)
    t0 = time.perf_counter()
    for _ in range(n):
        dst.copy_(src, non_blocking=True)
    for d in range(torch.cuda.device_count()):
        torch.cuda.synchronize(d)
    return src.numel() * src.element_size() * n / (time.perf_counter() - t0) / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", default="")
    args = p.parse_args()
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda:0")
    rows = {}
    if torch.cuda.device_count() > 1:
        rows["gpu0_to_gpu1_GBps"] = rate(torch.empty(n, dtype=torch.uint8, device="cuda:1"), src)
    rows["gpu0_to_gpu0_GBps"] = rate(torch.empty(n, dtype=torch.uint8, device="cuda:0"), src)
    rows["gpu0_to_pinned_host_GBps"] = rate(torch.empty(n, dtype=torch.uint8).pin_memory(), src)
    rows["gpu0_to_pageable_host_GBps"] = rate(torch.empty(n, dtype=torch.uint8), src, 3)
    rows["device"] = torch.cuda.get_device_name(0)
    for k, v in rows.items():
        print(f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
