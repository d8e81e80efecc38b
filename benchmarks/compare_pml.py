"""fastmetric's deep-metric losses against pytorch-metric-learning 2.9.0 (CPU torch).

Run from the repository root (needs torch and pytorch-metric-learning)::

    python benchmarks/compare_pml.py            # full grid, a few minutes
    python benchmarks/compare_pml.py --quick    # small subset, about a minute

Both libraries get the same batch: ``B`` embeddings of dimension ``m`` in 32
balanced, shuffled classes, float32 as users pass them (``--dtype float64``
for the other precision).  One call is forward plus backward: for PML
``loss_fn(emb, labels).backward()`` on a leaf tensor (``torch.set_num_threads(2)``),
for fastmetric the ``(loss, grad)`` function with its default ``n_jobs``.
Every loss uses the libraries' defaults (L2-normalised Euclidean distances,
all pairs / all triplets of the batch).

Each (library, case) runs in a fresh child process (multiprocessing, spawn
context): it builds the data, warms up on a small slice of the batch (Numba
loads or compiles its kernels, torch its kernels and thread pool), records its
resident set size, resets the kernel's high-water mark through
``/proc/self/clear_refs`` (falling back to the growth of ``ru_maxrss`` where
that is not allowed) and makes one full call.  "Memory" is the peak resident
set size during that call minus the size before it, so allocations by
compiled code count (tracemalloc would miss torch's and Numba's) but the
input and the loaded libraries do not.  The time is the best of several calls
(that first one included).

PML materialises every triplet (all-triplets loss) or a positive-pairs x
negative-pairs matrix (lifted structured loss); at large batches those need
tens of gigabytes.  Before each PML run its peak is estimated from the
algorithm (:func:`pml_memory_estimate`, constants measured on this kind of
machine); a case above ``--pml-mem-limit`` is not run and reads
"est. X GB, skipped".  As a second guard the parent polls the child's resident
size and kills it above the limit or when the machine's available memory runs
low, and reports that instead of letting the machine swap or the OOM killer
pick a victim.
"""

import argparse
import gc
import multiprocessing
import os
import platform
import resource
import sys
import time
import warnings

import numpy as np

try:
    import fastmetric  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LOSSES = ("contrastive", "triplet", "lifted", "generalized_lifted")
LABEL = {
    "contrastive": "contrastive",
    "triplet": "all-triplets",
    "lifted": "lifted",
    "generalized_lifted": "gen. lifted",
    "magnet": "magnet",
}
PML_CLASS = {
    "contrastive": "ContrastiveLoss",
    "triplet": "TripletMarginLoss",
    "lifted": "LiftedStructureLoss",
    "generalized_lifted": "GeneralizedLiftedStructureLoss",
}
FM_FUNCTION = {
    "contrastive": "contrastive_loss",
    "triplet": "triplet_margin_loss",
    "lifted": "lifted_structure_loss",
    "generalized_lifted": "generalized_lifted_structure_loss",
}
N_CLASSES = 32
# Magnet batches: clusters of this many examples (the paper's D), so a batch
# of B rows holds B / D clusters; cluster c belongs to class c % N_CLASSES.
MAGNET_D = 16
TORCH_THREADS = 2
WARMUP_ROWS = 64
# Extra samples for fast calls: keep timing until this much time was spent
# (and at least --repeats calls), at most MAX_SAMPLES calls; a call slower
# than SLOW_CALL seconds is timed once after its memory run.
TIME_BUDGET = 0.5
MAX_SAMPLES = 200
SLOW_CALL = 3.0
# The parent kills a child when the machine's available memory drops below
# this, whatever the limit says (other processes share the machine).
MIN_AVAILABLE = 1.5e9
GB = 1e9
MB = 1e6


# ----------------------------------------------------------------------------
# Data (rebuilt from a small spec in every child, so nothing large is pickled)
# ----------------------------------------------------------------------------


def make_batch(B, m, dtype, seed=0):
    """Embeddings ``(B, m)`` near 32 class centres and balanced shuffled labels.

    Class centres of norm about 0.5, points spread around them with norm
    about 1: after L2 normalisation classes overlap as early in training
    (about 22 % of all triplets violate the default margin), so every loss
    has a mix of active and inactive terms.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(B) % N_CLASSES).astype(np.int64)
    centres = rng.normal(size=(N_CLASSES, m)) / np.sqrt(m) * 0.5
    E = centres[labels] + rng.normal(size=(B, m)) / np.sqrt(m)
    return np.ascontiguousarray(E, dtype=dtype), labels


def make_magnet_batch(B, m, dtype, seed=0):
    """A magnet batch: ``B / MAGNET_D`` clusters of ``MAGNET_D`` examples."""
    rng = np.random.default_rng(seed)
    n_clusters = max(B // MAGNET_D, 2)
    clusters = np.repeat(np.arange(n_clusters), MAGNET_D)[:B]
    clusters = np.pad(clusters, (0, B - clusters.size), mode="edge")
    labels = (clusters % N_CLASSES).astype(np.int64)
    centres = rng.normal(size=(n_clusters, m)) * 1.5
    E = centres[clusters] + rng.normal(size=(B, m))
    return np.ascontiguousarray(E, dtype=dtype), labels, clusters.astype(np.int64)


def class_sizes(B):
    return np.bincount(np.arange(B) % N_CLASSES, minlength=N_CLASSES)


# ----------------------------------------------------------------------------
# PML memory model
# ----------------------------------------------------------------------------

# Bytes per element of PML's largest temporaries, read off its 2.9.0 source
# and fitted to peaks measured on a 2-core Linux machine (float32 and float64;
# all-triplets at B = 256 ... 2048 and lifted at B = 128, 256: estimates
# within about 12 % of the measured peak RSS growth; lifted at B = 64 and the
# pair losses within about 50 %, and those are small anyway).
#
# all-triplets: get_all_triplets_indices builds a B^3 uint8 mask when
# B^3 < 2^31 (torch.where on it), else loops over anchors and concatenates
# per-anchor index lists (three int64 per triplet, held twice at the peak).
# Forward and backward then hold a few per-triplet float tensors (gathered
# a-p and a-n distances, margin, relu, their gradients).
TRIPLET_INDEX_BYTES = 24
TRIPLET_FLOATS = 5
# lifted: n_pos_pairs x n_neg_pairs tensors -- the (a2 == a1) | (a2 == p)
# masks and about five float copies (masked negatives, margins, logsumexp's
# exponentials, gradients).
LIFTED_BOOLS = 2
LIFTED_FLOATS = 5
# contrastive / generalized lifted: a handful of B x B float and index tensors.
PAIR_BYTES = 16
PAIR_FLOATS = 9


def n_triplets(B):
    n = class_sizes(B)
    return int(np.sum(n * (n - 1) * (B - n)))


def n_pairs(B):
    n = class_sizes(B)
    pos = int(np.sum(n * (n - 1)))
    return pos, B * (B - 1) - pos


def pml_memory_estimate(loss, B, m, itemsize):
    """Estimated peak memory (bytes) of one PML forward + backward call."""
    if loss == "triplet":
        t = n_triplets(B)
        if B**3 < 2**31 - 1:  # vectorised: the B^3 uint8 mask, then torch.where
            index = B**3 + TRIPLET_INDEX_BYTES * t
        else:  # per-anchor pieces and their concatenation
            index = 2 * TRIPLET_INDEX_BYTES * t
        return max(index, TRIPLET_INDEX_BYTES * t + TRIPLET_FLOATS * itemsize * t)
    if loss == "lifted":
        pos, neg = n_pairs(B)
        return pos * neg * (LIFTED_BOOLS + LIFTED_FLOATS * itemsize)
    return (PAIR_BYTES + PAIR_FLOATS * itemsize) * B * B + 4 * B * m * itemsize


# ----------------------------------------------------------------------------
# Child process: one (library, case) measurement
# ----------------------------------------------------------------------------


def _status_kb(field, pid="self"):
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak():
    """Reset the kernel's peak-RSS mark; return the baseline in KiB and a reader."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        base = _status_kb("VmRSS")
        if base is None:
            raise OSError
        return base, lambda: _status_kb("VmHWM"), "VmHWM"
    except OSError:
        # ru_maxrss cannot be reset: growth over the high-water mark so far.
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return base, (lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss), \
            "ru_maxrss"


def _caller(lib, loss, E, labels, clusters=None):
    """A zero-argument callable doing forward + backward; returns (loss, grad)."""
    if lib == "pml":
        import torch
        from pytorch_metric_learning import losses as pml_losses

        loss_fn = getattr(pml_losses, PML_CLASS[loss])()
        emb = torch.tensor(E, requires_grad=True)
        lab = torch.from_numpy(labels)

        def call():
            emb.grad = None
            value = loss_fn(emb, lab)
            value.backward()
            return float(value.item()), emb.grad

        def result(out):
            return out[0], out[1].detach().numpy().astype(np.float64)

    elif loss == "magnet":
        from fastmetric import magnet

        def call():
            return magnet.magnet_loss(E, labels, clusters)

        def result(out):
            return float(out[0]), np.asarray(out[1], dtype=np.float64)

    else:
        from fastmetric import losses

        fn = getattr(losses, FM_FUNCTION[loss])

        def call():
            return fn(E, labels)

        def result(out):
            return float(out[0]), np.asarray(out[1], dtype=np.float64)

    return call, result


def measure(task, conn):
    """Run one task in this (fresh) process and send its measurements."""
    lib, loss, B, m = task["lib"], task["loss"], task["B"], task["m"]
    dtype = np.dtype(task["dtype"])
    out = dict(task)
    warnings.simplefilter("ignore")
    try:
        if lib == "pml":
            import torch

            torch.set_num_threads(TORCH_THREADS)
        clusters = None
        if loss == "magnet":
            E, labels, clusters = make_magnet_batch(B, m, dtype)
        else:
            E, labels = make_batch(B, m, dtype)
        # Warm-up on a slice with the same dtypes: Numba loads (or compiles)
        # its kernels, torch starts its thread pool, outside the measurement.
        k = B if task.get("warmup") == "full" else min(B, WARMUP_ROWS)
        warm, _ = _caller(lib, loss, E[:k].copy(), labels[:k].copy(),
                          None if clusters is None else clusters[:k].copy())
        warm()
        del warm
        call, result = _caller(lib, loss, E, labels, clusters)
        gc.collect()
        base, peak_reader, how = _reset_peak()
        t0 = time.perf_counter()
        first = call()
        elapsed = time.perf_counter() - t0
        out["mem_mb"] = max(peak_reader() - base, 0) * 1024 / MB
        out["mem_how"] = how
        out["loss_value"], out["grad"] = result(first)
        del first
        times = [elapsed]
        while elapsed < SLOW_CALL and len(times) < MAX_SAMPLES and (
                len(times) < task["repeats"] or sum(times) < TIME_BUDGET):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        out["time"] = min(times)
        out["n_calls"] = len(times)
        if not np.all(np.isfinite(out["grad"])):
            out["error"] = "non-finite gradient"
    except Exception as exc:  # report it; one failure must not end the run
        out["error"] = f"{type(exc).__name__}: {exc}"[:160]
    conn.send(out)
    conn.close()


def _available_bytes():
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_isolated(task, mem_limit):
    """Run ``measure(task)`` in a fresh spawned process, watching its memory.

    The child is killed when its resident size exceeds ``mem_limit`` bytes or
    the machine's available memory drops below ``MIN_AVAILABLE``.
    """
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=measure, args=(task, send), daemon=True)
    proc.start()
    send.close()
    out, peak_seen = None, 0
    while out is None:
        if recv.poll(0.05):
            try:
                out = recv.recv()
            except EOFError:
                break
            continue
        if not proc.is_alive() and not recv.poll(0.2):
            break
        rss = (_status_kb("VmRSS", proc.pid) or 0) * 1024
        peak_seen = max(peak_seen, rss)
        avail = _available_bytes()
        reason = None
        if rss > mem_limit:
            reason = f"killed at {rss / GB:.1f} GB RSS (> --pml-mem-limit)"
        elif avail is not None and avail < MIN_AVAILABLE:
            reason = (f"killed at {rss / GB:.1f} GB RSS (machine below "
                      f"{MIN_AVAILABLE / GB:.1f} GB available)")
        if reason:
            proc.kill()
            proc.join()
            return dict(task, error=reason, killed=True)
    proc.join()
    if out is None:
        return dict(task, error=f"child died (exit code {proc.exitcode}, "
                    f"{peak_seen / GB:.1f} GB RSS seen)")
    return out


def pml_available():
    import importlib.util

    return (importlib.util.find_spec("torch") is not None
            and importlib.util.find_spec("pytorch_metric_learning") is not None)


# ----------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------


def ok(r):
    return r is not None and "error" not in r and "skipped" not in r


def fmt_t(r):
    if r is None:  # not run (magnet, or PML not installed)
        return "-"
    if "skipped" in r:
        return r["skipped"]
    if "error" in r:
        return "error"
    t = r["time"]
    return f"{t * 1e3:.3g} ms" if t < 1 else f"{t:.3g} s"


def fmt_mb(v):
    if v >= 1000:
        return f"{v / 1000:.2g} GB"
    return f"{v:.0f} MB" if v >= 10 else f"{v:.1f} MB"


def fmt_mem(r):
    return fmt_mb(r["mem_mb"]) if ok(r) else "n/a"


def fmt_ratio(x):
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:.3g}x" if x < 1e4 else f"{x:.2e}x"


def rel_diff(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def grad_rel_diff(g1, g2):
    den = max(np.linalg.norm(g1), np.linalg.norm(g2), 1e-300)
    return float(np.linalg.norm(g1 - g2) / den)


def print_table(header, rows):
    widths = [max(len(str(h)), *(len(str(row[k])) for row in rows))
              for k, h in enumerate(header)]
    line = "  ".join(str(h).rjust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)))
    print()


def case_row(res):
    pml, fm = res["pml"], res["fm"]
    both = ok(pml) and ok(fm)
    mem_ratio = (max(pml["mem_mb"], 1.0) / max(fm["mem_mb"], 1.0)) if both else None
    est = res.get("pml_est")
    return [
        LABEL[res["loss"]] + (" *" if res.get("context") else ""),
        res["B"], res["m"],
        fmt_t(pml), fmt_t(fm),
        fmt_ratio(pml["time"] / fm["time"] if both else None),
        fmt_mem(pml), fmt_mem(fm),
        fmt_ratio(mem_ratio),
        "n/a" if est is None else fmt_mb(est / MB),
        f"{pml['loss_value']:.6g}" if ok(pml) else "n/a",
        f"{fm['loss_value']:.6g}" if ok(fm) else "n/a",
        (f"{rel_diff(pml['loss_value'], fm['loss_value']):.1e}" if both
         else "n/a"),
        f"{grad_rel_diff(pml['grad'], fm['grad']):.1e}" if both else "n/a",
    ]


# ----------------------------------------------------------------------------
# Plan and main
# ----------------------------------------------------------------------------


def plan(args):
    """Cases as (loss, B, m, context) in running order.

    ``context`` cases are extra batch sizes that show PML's time where its
    grid case is skipped (lifted at B=256, all-triplets at B=1024).
    """
    if args.quick:
        sizes, dims = [128, 512], [64]
    else:
        sizes, dims = [128, 512, 2048], [64, 128]
    if args.batch_sizes:
        sizes = args.batch_sizes
    if args.dims:
        dims = args.dims
    wanted = args.cases or [*LOSSES, "magnet"]
    cases = []
    for loss in wanted:
        for m in dims:
            for B in sizes:
                cases.append((loss, B, m, False))
            if args.quick or args.batch_sizes:
                continue
            if loss == "lifted":
                cases.append((loss, 256, m, True))
            elif loss == "triplet":
                cases.append((loss, 1024, m, True))
    order = {name: k for k, name in enumerate([*LOSSES, "magnet"])}
    return sorted(cases, key=lambda c: (order[c[0]], c[2], c[1]))


def default_mem_limit():
    avail = _available_bytes()
    limit = 16 * GB
    if avail is not None:
        limit = min(limit, 0.75 * avail)
    return limit


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="B in {128, 512}, m = 64: a smoke test of about a minute")
    parser.add_argument("--cases", type=lambda s: s.split(","), default=None,
                        metavar="LOSS[,LOSS...]",
                        help="losses to run, from " + ", ".join([*LOSSES, "magnet"])
                        + " (default: all)")
    parser.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")],
                        default=None, metavar="B[,B...]",
                        help="override the batch sizes (drops the context cases)")
    parser.add_argument("--dims", type=lambda s: [int(v) for v in s.split(",")],
                        default=None, metavar="M[,M...]",
                        help="override the embedding dimensions")
    parser.add_argument("--repeats", type=int, default=5,
                        help="at least this many timed calls per case, unless a "
                        f"call takes over {SLOW_CALL:g} s (default 5)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--warmup", choices=["slice", "full"], default="slice",
                        help=f"warm up on the first {WARMUP_ROWS} rows (default) or "
                        "on the whole batch; 'full' can make later calls reuse "
                        "pages the allocator kept, so memory may read low")
    parser.add_argument("--pml-mem-limit", type=float, default=None, metavar="GB",
                        help="skip PML cases estimated above this many GB and kill "
                        "runs that exceed it (default: 16, or 75%% of the memory "
                        "available now if less)")
    args = parser.parse_args(argv)
    for name in args.cases or ():
        if name not in (*LOSSES, "magnet"):
            parser.error(f"unknown loss {name!r} in --cases")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    mem_limit = (args.pml_mem_limit * GB if args.pml_mem_limit is not None
                 else default_mem_limit())
    itemsize = np.dtype(args.dtype).itemsize
    have_pml = pml_available()
    t_start = time.perf_counter()

    import numba

    print(f"python {platform.python_version()}, numpy {np.__version__}, "
          f"numba {numba.__version__}, cores {os.cpu_count()}")
    if have_pml:
        import pytorch_metric_learning
        import torch

        print(f"torch {torch.__version__} ({TORCH_THREADS} threads), "
              f"pytorch-metric-learning {pytorch_metric_learning.__version__}")
    else:
        print("torch / pytorch-metric-learning not importable: PML columns are n/a")
    print(f"dtype {args.dtype}, {N_CLASSES} balanced classes (labels shuffled), "
          f"PML memory limit {mem_limit / GB:.1f} GB")
    print("time: forward + backward, best of >= "
          f"{args.repeats} calls (>= {TIME_BUDGET:g} s of calls; one call if "
          f"slower than {SLOW_CALL:g} s) after a warm-up on "
          + (f"{WARMUP_ROWS} rows" if args.warmup == "slice" else "the whole batch"))
    print("memory: peak RSS during the first full call minus RSS before it, "
          "each (library, case) in its own process")
    print()

    results = []
    for loss, B, m, context in plan(args):
        base = {"loss": loss, "B": B, "m": m, "dtype": args.dtype,
                "repeats": args.repeats, "warmup": args.warmup}
        res = {"loss": loss, "B": B, "m": m, "context": context}
        res["fm"] = run_isolated(dict(base, lib="fm"), float("inf"))
        if loss == "magnet" or not have_pml:
            res["pml"] = None
        else:
            est = pml_memory_estimate(loss, B, m, itemsize)
            res["pml_est"] = est
            if est > mem_limit:
                res["pml"] = dict(base, lib="pml",
                                  skipped=f"est. {est / GB:.2g} GB, skipped")
            else:
                res["pml"] = run_isolated(dict(base, lib="pml"), mem_limit)
        results.append(res)
        print(f"  done {LABEL[loss]:>12} B={B:<4d} m={m:<3d}: PML {fmt_t(res['pml'])}, "
              f"fastmetric {fmt_t(res['fm'])}", flush=True)
    print()

    header = ["loss", "B", "m", "PML time", "ours time", "speedup", "PML mem",
              "ours mem", "mem ratio", "PML est", "PML loss", "ours loss",
              "loss rel diff", "grad rel diff"]
    print_table(header, [case_row(r) for r in results])
    print("* context case: a smaller batch where PML still fits in memory.")
    print("PML est: the memory model's estimate for PML (compare with PML mem).")
    if any(r["loss"] == "magnet" for r in results):
        print(f"magnet: fastmetric only (no peer has it); B / {MAGNET_D} clusters "
              f"of {MAGNET_D} examples.")
    print()
    for r in results:
        for lib in ("pml", "fm"):
            if r[lib] is not None and "error" in r[lib]:
                print(f"  {lib} {LABEL[r['loss']]} B={r['B']} m={r['m']}: "
                      f"{r[lib]['error']}")
    print()
    summarise(results, args.quick)
    print(f"total wall time {time.perf_counter() - t_start:.0f} s")


def summarise(results, quick):
    """Print every issue-9 target with the measured value and met / NOT met."""

    def find(loss, B, m):
        return next((r for r in results if (r["loss"], r["B"], r["m"]) == (loss, B, m)
                     and not r.get("context")), None)

    def verdict(good):
        return "n/a" if good is None else ("met" if good else "NOT met")

    rows = []
    big = find("triplet", 2048, 128)
    fm = big["fm"] if big else None
    rows.append(["all-triplets B=2048 m=128 in <= 0.1 s",
                 fmt_t(fm) if ok(fm) else "not run",
                 verdict(fm["time"] <= 0.1 if ok(fm) else None)])
    rows.append(["all-triplets B=2048 m=128 in <= 100 MB",
                 fmt_mem(fm) if ok(fm) else "not run",
                 verdict(fm["mem_mb"] <= 100 if ok(fm) else None)])
    pml = big["pml"] if big else None
    if ok(fm) and ok(pml):
        sp = pml["time"] / fm["time"]
        memr = max(pml["mem_mb"], 1.0) / max(fm["mem_mb"], 1.0)
        rows.append(["all-triplets B=2048 m=128 >= 100x PML",
                     f"time {sp:.3g}x, memory {memr:.3g}x", verdict(sp >= 100)])
    else:
        why = "not run" if pml is None else pml.get("skipped", pml.get("error", ""))
        rows.append(["all-triplets B=2048 m=128 >= 100x PML", f"PML: {why}", "n/a"])
    lifted = [r for r in results if r["loss"] == "lifted" and r["B"] == 512
              and ok(r["fm"])]
    if lifted:
        worst = max(lifted, key=lambda r: r["fm"]["time"])
        rows.append(["lifted B=512 in <= 5 ms (every m)",
                     f"max {fmt_t(worst['fm'])} (m={worst['m']})",
                     verdict(worst["fm"]["time"] <= 5e-3)])
        p = worst["pml"]
        if p is not None:
            state = p.get("skipped") or p.get("error") or f"ran, {fmt_t(p)}"
            rows.append(["lifted B=512: PML out of memory", f"PML: {state}", "-"])
    else:
        rows.append(["lifted B=512 in <= 5 ms (every m)", "not run", "n/a"])
    for loss in ("contrastive", "generalized_lifted"):
        sp = [(r["pml"]["time"] / r["fm"]["time"], r["B"], r["m"]) for r in results
              if r["loss"] == loss and ok(r["pml"]) and ok(r["fm"])]
        if sp:
            worst = min(sp)
            rows.append([f"{LABEL[loss]} >= 3x faster than PML (every case)",
                         f"min {worst[0]:.3g}x (B={worst[1]}, m={worst[2]})",
                         verdict(worst[0] >= 3)])
        else:
            rows.append([f"{LABEL[loss]} >= 3x faster than PML (every case)",
                         "not run", "n/a"])
    print("== Summary against the issue's targets"
          + (" (--quick subset: indicative only)" if quick else ""))
    print()
    print_table(["target", "measured", "verdict"], rows)


if __name__ == "__main__":
    main()
