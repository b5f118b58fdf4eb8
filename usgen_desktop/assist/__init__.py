"""Click to mask: a small interactive segmentation network (RITM / DeepGrow family).

The user clicks inside (left) or outside (right) a structure; the network takes the image, a
positive and a negative click map and its own previous mask, and returns the new mask. Modules:
``clicks`` (click maps, the simulated clicker, the letterbox geometry; numpy only), ``model``
(the network, save/load; torch), ``predict`` (one interactive session on one image; torch),
``data`` (training samples from a folder of images + masks or the shared datasets), ``train``
(simulated-click training and fine-tuning; torch) and ``batch`` (``usgen assist``).
torch is imported by ``model``, ``predict`` and ``train`` only, so importing this package is cheap.
"""
