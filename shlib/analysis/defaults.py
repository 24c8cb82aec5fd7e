"""Every default of the analysis, in one place: confidence, bootstrap seed and resamples, baseline.

The CLI, the notebooks' parameters, the report and the functions themselves read these names; a
change here changes them all.
"""

from __future__ import annotations

from shlib.errors import AnalysisError

CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 12345
DEFAULT_BASELINE = "runc"
#: Ratio baselines that stand in for each other when one is absent from a run.
FALLBACK_BASELINES = {"runc": "native", "native": "runc"}


def resolve_baseline(runtimes: list[str], baseline: str) -> tuple[str, list[str]]:
    """The baseline to use and notes: ``baseline`` if present, else its designated fallback (runc <-> native)."""
    if baseline in runtimes:
        return baseline, []
    fallback = FALLBACK_BASELINES.get(baseline)
    if fallback in runtimes:
        return fallback, [f"baseline {baseline} is absent from this run: ratios are to {fallback} instead"]
    raise AnalysisError(f"baseline runtime {baseline!r} is not in the results (runtimes present: "
                        f"{', '.join(sorted(runtimes))}); pass one of them as baseline")
