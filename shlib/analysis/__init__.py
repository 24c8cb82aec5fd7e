"""Analysis: pure functions over results frames (``shlib.results.store.load_results``); never the collection code.

    frames        a results frame made ready: factors, ok flag, resampling cluster
    bootstrap     the cluster bootstrap engine (resampled medians / log-means, jackknife, BCa)
    summaries     per-cell load-time statistics
    ratios        runtime / baseline per cell, and the geometric mean across modules
    significance  tests between runtimes with effect sizes
    scaling       load time and ratios against the number of containers at once
    replication   the reference study's claims beside this run's estimates
    variants      gVisor builds, platforms and flags, and the contrasts between them
    analyze       all of it at once: AnalysisResult
    defaults      every default (confidence, seed, resamples, baseline) in one place
"""
