"""Notebook UI: matplotlib figures and plots, the frame browser, the Tuner and Explorer widgets.

This package imports matplotlib and ipywidgets (``pip install 'dsprobe[notebook]'``); the core never
imports it. Notebooks import from here: ``from dsprobe.notebook import Tuner, plot_frame``.
"""

from dsprobe.notebook.browser import Explorer, FrameBrowser
from dsprobe.notebook.figures import (
    HIGHLIGHT,
    PALETTE,
    color,
    figure_jpeg,
    figure_png,
    label_of,
    new_figure,
    pyplot,
)
from dsprobe.notebook.plots import (
    FrameCanvas,
    ab_difference,
    counts_by_stream,
    crop_gallery,
    draw_detections,
    error_crops,
    frame_gaps,
    plot_ab,
    plot_counts,
    plot_frame,
    plot_frame_gaps,
    plot_heatmap,
    plot_pr_curves,
    plot_score_distributions,
    show_image,
)
from dsprobe.notebook.secondary import (
    ProjectionExplorer,
    ThresholdView,
    crop_grid,
    gallery_by,
    object_crop,
    plot_confusion,
    plot_cosine_histograms,
    plot_norms,
    plot_projection,
    plot_threshold_sweep,
)
from dsprobe.notebook.tuner import ALL_CLASSES, Tuner, search_panel

__all__ = [
    "ALL_CLASSES",
    "HIGHLIGHT",
    "PALETTE",
    "Explorer",
    "FrameBrowser",
    "FrameCanvas",
    "ProjectionExplorer",
    "ThresholdView",
    "Tuner",
    "ab_difference",
    "color",
    "counts_by_stream",
    "crop_gallery",
    "crop_grid",
    "gallery_by",
    "object_crop",
    "plot_confusion",
    "plot_cosine_histograms",
    "plot_norms",
    "plot_projection",
    "plot_threshold_sweep",
    "draw_detections",
    "error_crops",
    "figure_jpeg",
    "figure_png",
    "frame_gaps",
    "label_of",
    "new_figure",
    "plot_ab",
    "plot_counts",
    "plot_frame",
    "plot_frame_gaps",
    "plot_heatmap",
    "plot_pr_curves",
    "plot_score_distributions",
    "pyplot",
    "search_panel",
    "show_image",
]
