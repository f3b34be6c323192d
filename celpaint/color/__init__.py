"""L*a*b* and the normalisation the networks see: tensor and array versions side by side, and
the model variants (``Task``)."""
