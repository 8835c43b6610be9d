"""Case studies on general text (``transcoders``)."""
