"""What a run learned, in numbers and figures.

    metrics.py   each test image's prediction, per-class metrics, attention and position numbers
    plots.py     every figure (matplotlib, file-only backend)
    writer.py    the end-of-run report written into a run folder
    sweeps.py    summaries of the jobs of a sweep, or of every run under a folder
    seeds.py     a sweep's jobs that differ only in seed, taken together (mean, std, n, band)
    compare.py   two or more runs side by side: the settings that differ, metrics, figures
    compare_plots.py  the figures of a comparison (curves overlaid, per-class change)

Nothing here trains.
"""
