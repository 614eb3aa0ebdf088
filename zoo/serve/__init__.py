"""``zoo serve``: a segmentation model behind the Open Inference Protocol v2, a web page, and ``/metrics``.

- :func:`create_app` (:mod:`zoo.serve.app`): the ASGI app for a ready :class:`zoo.infer.Predictor`;
- :func:`serve` (:mod:`zoo.serve.server`): run it with uvicorn, drain on SIGTERM, exit 0;
- :mod:`zoo.serve.batching`: the bounded queue and dynamic batching; :mod:`zoo.serve.guard`: request ids, API
  key, body limit, metrics; :mod:`zoo.serve.protocol`: the protocol's bodies; :mod:`zoo.serve.images`: decoding
  uploads safely, encoding masks and overlays.

Needs the ``serve`` extra (``pip install 'zoo[serve]'``: FastAPI, uvicorn, python-multipart, prometheus-client).
"""

from zoo.serve.app import create_app
from zoo.serve.server import serve

__all__ = ["create_app", "serve"]
