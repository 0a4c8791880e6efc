"""Commands over run directories that are not training: export a model, serve runs over HTTP, and the
inspection commands (summary, Grad-CAM, filters, interpretation) that read a run and call ``nnlab.inspection``."""
