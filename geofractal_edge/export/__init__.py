"""trace -> lower -> quantize -> write bundle. Needs torch; TensorRT optional and lazy."""
