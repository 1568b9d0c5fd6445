"""A learnable synthetic task that exercises the whole core: a cascade of two encoders and two heads."""
