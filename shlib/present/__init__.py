"""What people read: tables, sentences and figures from an analysis; notebook parameters; reports.

    tables     DataFrames for notebooks and reports (host, run, load times, ratios)
    readings   the reading of a result in words, every sentence computed from the data
    plots      figures (PNG + SVG), one colour per runtime
    params     notebook parameters, checked before any work
    export     ``shlib analyze``: CSV tables, figures, headline, analysis.json
    notebooks  the notebooks as files: kernel, papermill execution, clean commits
    report     ``shlib report``: the analysis notebooks executed on one run, as HTML
"""
