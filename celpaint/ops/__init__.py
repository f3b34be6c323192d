"""Pure frame algorithms on numpy arrays (OpenCV, no IO, no torch)."""
