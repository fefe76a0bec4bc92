"""Use cases that run on the board's models.

- :mod:`.cloud`: cloud screening of image tiles before downlink (generator, ``screen``, metrics);
- :mod:`.shipped`: the model, card and held-out tiles in ``flight/compute/models/``;
- :mod:`.train`, :mod:`.export`, :mod:`.build`: the numpy training, the ONNX graph and the
  rebuild behind ``scripts/build_cloud_model.py`` (build time only; ``export`` and ``build``
  need the ``onnx`` package, the board does not).
"""
