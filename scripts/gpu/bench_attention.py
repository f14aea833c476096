#!/usr/bin/env python3
"""Python part of scripts/gpu/bench_attention.sh: times PyTorch's references in the same run
as cpserve's kernels (whose figures come in as JSON lines from cpserve_attention_sweep) and
prints one table with ratios.

Prefill: causal, 32 query / 8 KV heads, head dim 128, bf16, one sequence of T tokens;
TFLOP/s = 4 * T^2 / 2 * D * Hq / time (FlashAttention's causal convention, as ours).
  - torch default backend (scaled_dot_product_attention with no backend forced), GQA given
    as enable_gqa=True and as KV heads repeated to 32; which kernel actually ran is read
    from the profiler (cuDNN / flash / efficient / math).
  - cuDNN backend forced (SDPBackend.CUDNN_ATTENTION) and flash backend forced
    (SDPBackend.FLASH_ATTENTION), each with the faster GQA form it accepts.
Decode: our paged decode attention GB/s (K and V bytes read) beside a device-to-device copy
(torch copy_ of a 4 GiB bf16 tensor, bytes read + written) measured in the same run.
"""

import argparse
import json
import os
import sys

HQ, HKV, D = 32, 8, 128


def log(msg=""):
    print(msg, flush=True)


def median_ms(fn, torch, iters=10, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def kernel_family(names):
    """cuDNN / flash / efficient / math from the CUDA kernel names of one SDPA call."""
    joined = " ".join(names).lower()
    if "cudnn" in joined or ("fprop" in joined and "sdpa" in joined):
        return "cudnn"
    if "flash" in joined:
        return "flash"
    if "fmha" in joined or "efficient" in joined or "cutlassf" in joined:
        return "efficient"
    if "gemm" in joined or "softmax" in joined:
        return "math"
    return "unknown"


def which_kernel(fn, torch):
    try:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        names = [e.name for e in prof.events() if e.device_type.name == "CUDA"]
        return kernel_family(names), sorted(set(names))[:4]
    except Exception as e:  # noqa: BLE001 - the profiler is optional
        return "unknown", [f"profiler failed: {e}"]


def prefill_refs(tokens, torch, F):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    g = torch.Generator(device="cuda").manual_seed(1)
    q = torch.randn(1, HQ, tokens, D, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(1, HKV, tokens, D, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(1, HKV, tokens, D, device="cuda", dtype=torch.bfloat16, generator=g)
    kr = k.repeat_interleave(HQ // HKV, dim=1)
    vr = v.repeat_interleave(HQ // HKV, dim=1)
    flops = 4.0 * tokens * tokens / 2 * D * HQ
    forms = {
        "gqa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
        "repeat": lambda: F.scaled_dot_product_attention(q, kr, vr, is_causal=True),
    }
    out = {"tokens": tokens}
    for form, fn in forms.items():
        try:
            ms = median_ms(fn, torch)
            fam, names = which_kernel(fn, torch)
            out[f"default_{form}"] = {"ms": ms, "tflops": flops / ms / 1e9, "kernel": fam, "names": names}
        except Exception as e:  # noqa: BLE001
            out[f"default_{form}"] = {"error": str(e).splitlines()[0][:200]}
    for backend_name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
        for form, fn in forms.items():
            key = f"{backend_name}_{form}"
            try:
                with sdpa_kernel(backend):
                    ms = median_ms(fn, torch)
                out[key] = {"ms": ms, "tflops": flops / ms / 1e9}
            except Exception as e:  # noqa: BLE001 - a backend may refuse a form
                out[key] = {"error": str(e).splitlines()[0][:200] if str(e) else type(e).__name__}
    del q, k, v, kr, vr
    torch.cuda.empty_cache()
    return out


def copy_gbps(torch, gib=4):
    n = gib * (1 << 30) // 2
    src = torch.empty(n, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), torch)
    gbps = 2 * n * 2 / (ms / 1e3) / 1e9
    del src, dst
    torch.cuda.empty_cache()
    return gbps


def best(entries):
    ok = [e for e in entries if "tflops" in e]
    return max(ok, key=lambda e: e["tflops"]) if ok else None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ours", required=True, help="JSON lines from cpserve_attention_sweep")
    p.add_argument("--tests", default="", help="GPU attention test status line(s) to include")
    p.add_argument("--tests_ok", default="1", help="1 when the GPU attention tests passed")
    p.add_argument("--json", default="", help="output JSON (default: $OUT/bench_attention.json if OUT is set)")
    args = p.parse_args()
    import torch
    import torch.nn.functional as F
    if not torch.cuda.is_available():
        sys.exit("bench_attention: no CUDA device for PyTorch")

    ours = [json.loads(l) for l in open(args.ours) if l.strip().startswith("{")]
    prefill_ours = {o["tokens"]: o for o in ours if o["kind"] == "prefill"}
    decode_ours = [o for o in ours if o["kind"] == "decode"]
    dev = torch.cuda.get_device_name(0)
    log(f"bench_attention: {dev}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")

    prefill = []
    for t in sorted(prefill_ours):
        r = prefill_refs(t, torch, F)
        r["ours"] = prefill_ours[t]
        prefill.append(r)
    copy = copy_gbps(torch)

    log("\nPrefill attention (causal, 32 q / 8 kv heads, D 128, bf16), TFLOP/s:")
    hdr = f"{'tokens':>7} {'ours':>7} {'cuDNN':>7} {'flash':>7} {'ours/cuDNN':>10} {'ours/flash':>10}  " \
          f"torch default: enable_gqa=True | repeat_kv"
    log(hdr)
    for r in prefill:
        o = r["ours"].get("tflops")
        c = best([r["cudnn_gqa"], r["cudnn_repeat"]])
        f = best([r["flash_gqa"], r["flash_repeat"]])
        r["cudnn_best"], r["flash_best"] = c, f
        r["ratio_cudnn"] = o / c["tflops"] if o and c else None
        r["ratio_flash"] = o / f["tflops"] if o and f else None

        def dflt(key):
            e = r[key]
            return f"{e['tflops']:.0f} ({e['kernel']})" if "tflops" in e else "error"

        def num(x, spec):
            return format(x, spec) if x is not None else "n/a"

        log(f"{r['tokens']:>7} {num(o, '7.1f')} {num(c and c['tflops'], '7.1f')} "
            f"{num(f and f['tflops'], '7.1f')} {num(r['ratio_cudnn'], '10.2f')} {num(r['ratio_flash'], '10.2f')}  "
            f"{dflt('default_gqa')} | {dflt('default_repeat')}")
    for r in prefill[:1]:
        for key in ("cudnn_gqa", "cudnn_repeat", "flash_gqa", "flash_repeat"):
            if "error" in r[key]:
                log(f"  note: {key} refused at {r['tokens']}: {r[key]['error']}")
        log(f"  default backend kernels: enable_gqa=True -> {r['default_gqa'].get('kernel')}, "
            f"repeated KV -> {r['default_repeat'].get('kernel')}")

    log(f"\nDecode attention (paged, block 16, 32 q / 8 kv heads, D 128, bf16), GB/s of K+V read; "
        f"device copy {copy:.0f} GB/s (read + written):")
    contexts = sorted({o["context"] for o in decode_ours})
    batches = sorted({o["batch"] for o in decode_ours})
    log(f"{'batch':>6} " + " ".join(f"{c // 1024:>10}k" for c in contexts))
    table = {(o["batch"], o["context"]): o for o in decode_ours}
    for b in batches:
        cells = []
        for c in contexts:
            o = table.get((b, c), {})
            if "gbps" in o:
                o["pct_of_copy"] = 100.0 * o["gbps"] / copy
                cells.append(f"{o['gbps']:>5.0f} {o['pct_of_copy']:>3.0f}%")
            else:
                cells.append(f"{'skip' if 'skipped' in o else 'err':>10}")
        log(f"{b:>6} " + " ".join(f"{x:>11}" for x in cells))
    log("  (each cell: GB/s and % of the device copy)")
    if args.tests:
        log(f"\nGPU attention tests: {args.tests}")

    out = args.json or (os.path.join(os.environ["OUT"], "bench_attention.json") if os.environ.get("OUT") else "")
    if out:
        with open(out, "w") as fh:
            json.dump({"device": dev, "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
                       "tests": args.tests, "tests_ok": args.tests_ok == "1", "prefill": prefill,
                       "decode": decode_ours, "copy_gbps": copy}, fh, indent=1)
        log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
