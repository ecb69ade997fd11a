"""The chapter's CIFAR-10 network, its data, training and checkpoints.

- :mod:`.cifar10`: the TensorFlow tutorial network (forward/backward through
  :mod:`fastconv.nn`, layer pieces in :mod:`.layers`), its initialisation and loss;
- :mod:`.optim`: the tutorial's staircase learning rate, SGD, moving average;
- :mod:`.data`: batches that depend only on (seed, step);
- :mod:`.cifar_data`: the CIFAR-10 reader and the tutorial's input pipeline;
- :mod:`.digits`: scikit-learn's 8x8 digits for the same architecture;
- :mod:`.train`: a training loop (optionally over data-parallel towers);
- :mod:`.checkpoint`: npz checkpoints that resume exactly;
- :mod:`.torch_twin`: the same network in PyTorch, for tests and benchmarks.

Examples
--------
>>> from fastconv.models import cifar10
>>> cifar10.param_shapes()["conv2/weights"]
(64, 64, 5, 5)
"""
