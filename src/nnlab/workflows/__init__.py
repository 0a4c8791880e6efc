"""Stand-alone workflows that optimise something other than a model's weights: style transfer (``stylize``)."""
