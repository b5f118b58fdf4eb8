"""Physics of the speckle backend: probe geometry and the convolution-model simulator.

numpy/scipy/OpenCV only: no torch, no weights.
"""
