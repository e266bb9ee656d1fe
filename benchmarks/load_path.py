"""The full-size load path (issue 8): write the synthetic 34B checkpoint in the model's own layout
(one 19 GB torch pickle), then load it as a user would: SHA256 check, the one-time conversion to
safetensors (any converted copy left by an earlier run is removed first, so it is timed), and the
load with each kernel, every step timed by `load_model`'s own record.

    python benchmarks/load_path.py FOLDER --device cuda --kernels torch marlin --out FILE [--cleanup]

Before each load the page cache is dropped when the machine allows it (root on Linux), so a load
reads its files from disk; the result says whether it could. --cleanup removes the pickle and its
converted copy afterwards (together they take about 38 GB).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def drop_page_cache() -> bool:
    """Empty the kernel's page cache; False where this process may not."""
    try:
        subprocess.run(["sync"], check=True, timeout=300)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except (OSError, subprocess.SubprocessError):
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="where the synthetic .bin checkpoint is (or will be) written")
    parser.add_argument("--arch", default="codefuse-34b", help="a name from workbench.model.synthetic.ARCHS")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--kernels", nargs="+", default=["torch"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--keep-page-cache", action="store_true", help="do not drop the page cache before each load")
    parser.add_argument("--cleanup", action="store_true",
                        help="remove the checkpoint and its converted copy at the end")
    args = parser.parse_args(argv)

    from workbench.cache import atomic_write_json
    from workbench.environment import collect_env
    from workbench.errors import KernelUnavailable
    from workbench.model.checkpoint import Layout, converted_folder, detect_layout
    from workbench.model.libraries import quiet
    from workbench.model.load import load_model
    from workbench.model.synthetic import write_synthetic

    quiet()
    folder = Path(args.folder)
    result = {"folder": str(folder), "arch": args.arch, "synthetic": True, "loads": [], "skipped": {}}
    if folder.exists():
        result["write"] = "written by an earlier call"
    else:
        rec = write_synthetic(folder, args.arch, Layout.AUTOGPTQ_BIN, progress=False)
        result["write"] = {"seconds": round(rec.seconds, 1), "weights_gb": round(rec.weights_bytes / 1e9, 2),
                           "gb_per_s": round(rec.write_gb_per_s, 2)}
        print(f"wrote {rec.weights_bytes / 1e9:.2f} GB as .bin in {rec.seconds:.1f} s", flush=True)
    result["layout"] = detect_layout(folder).value
    shutil.rmtree(converted_folder(folder, progress=False), ignore_errors=True)  # so the conversion is timed
    for kernel in args.kernels:
        cold = False if args.keep_page_cache else drop_page_cache()
        started = time.perf_counter()
        try:
            loaded = load_model(folder, kernel=kernel, device=args.device)
        except KernelUnavailable as e:
            result["skipped"][kernel] = str(e)
            continue
        r = loaded.load_record
        row = {"kernel": r.kernel, "page_cache_dropped": cold, "verify_s": r.verify_s, "convert_s": r.convert_s,
               "load_s": r.load_s, "first_forward_s": r.first_forward_s,
               "total_s": round(time.perf_counter() - started, 1), "loaded_from": r.loaded_from,
               "allocated_gb": (r.memory or {}).get("allocated_gb"), "reserved_gb": (r.memory or {}).get("reserved_gb"),
               "rss_gb": (r.memory or {}).get("rss_gb")}
        result["loads"].append(row)
        print(json.dumps(row), flush=True)
        loaded.release()
    result["env"] = collect_env(args.device)
    atomic_write_json(args.out, result)
    if args.cleanup:
        shutil.rmtree(converted_folder(folder, progress=False), ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if result["loads"] else 1


if __name__ == "__main__":
    sys.exit(main())
