"""What to measure: the experiment spec, module sets, presets, the plan and the adaptive stopping rule.

    modules    npm module specs and the named module sets (paper, serverless)
    spec       Spec: every field validated before anything runs; presets/*.yaml
    plan       Spec -> seeded, interleaved batches
    adaptive   when a cell's median is known well enough (adaptive repetitions)
"""
