"""Shared by the peer scripts: median timing like `statespace bench`, peak RSS."""
import resource, time


def timeit(fn, min_reps=5, min_secs=2.0):
    """Calls fn once to warm up, then at least min_reps times and min_secs; (median, min, reps)."""
    fn()
    ts, t0 = [], time.perf_counter()
    while len(ts) < min_reps or time.perf_counter() - t0 < min_secs:
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2], ts[0], len(ts)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
