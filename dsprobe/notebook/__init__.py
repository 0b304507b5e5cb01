"""Notebook UI: matplotlib figures and plots, the frame browser, the Tuner and Explorer widgets.

This package imports matplotlib and ipywidgets (``pip install 'dsprobe[notebook]'``); the core never
imports it. Notebooks import from here: ``from dsprobe.notebook import Tuner, plot_frame``.
"""

from dsprobe.notebook.browser import Explorer, FrameBrowser
from dsprobe.notebook.controls import Player, SaveSpec, Zoom
from dsprobe.notebook.errors_view import (
    ErrorGallery,
    error_thumbnail,
    plot_confusion,
    plot_error_breakdown,
    plot_operating_curves,
)
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
from dsprobe.notebook.frames import (
    ab_difference,
    draw_detections,
    plot_ab,
    plot_frame,
    show_image,
)
from dsprobe.notebook.plots import (
    counts_by_stream,
    crop_gallery,
    error_crops,
    frame_gaps,
    plot_counts,
    plot_frame_gaps,
    plot_heatmap,
    plot_pr_curves,
    plot_score_distributions,
)
from dsprobe.notebook.raster import OUTCOME_COLORS, FrameCanvas, Panel
from dsprobe.notebook.search_view import objectives_panel, search_panel
from dsprobe.notebook.secondary import (
    ProjectionExplorer,
    ThresholdView,
    crop_grid,
    gallery_by,
    object_crop,
    plot_cosine_histograms,
    plot_norms,
    plot_projection,
    plot_threshold_sweep,
)
from dsprobe.notebook.timeline import Timeline
from dsprobe.notebook.tuner import ALL_CLASSES, Tuner

__all__ = [
    "ErrorGallery",
    "Player",
    "SaveSpec",
    "Timeline",
    "Zoom",
    "error_thumbnail",
    "objectives_panel",
    "plot_confusion",
    "plot_error_breakdown",
    "plot_operating_curves",
    "ALL_CLASSES",
    "HIGHLIGHT",
    "PALETTE",
    "Explorer",
    "OUTCOME_COLORS",
    "Panel",
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
