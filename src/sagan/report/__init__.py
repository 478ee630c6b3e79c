"""`sagan report`: the paper's Table 1 and figures regenerated from our run, plus MLflow run history.

Modules: `paper` (the published rows), `inputs` (reading the stage outputs), `figures`
(Figs. 4-6), `history` (the MLflow comparison table), `document` (one document model rendered
as Markdown and self-contained HTML) and `build` (the stage's `run`).
"""
