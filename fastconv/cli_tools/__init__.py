"""The runners behind the ``fastconv`` command (see :mod:`fastconv.cli`).

One module per job: ``info``, ``profile`` (with ``profile_claims``,
``profile_sweeps``, ``report`` and ``plots``), ``bench_table``,
``calibrate_cmd``, ``convolve_cmd``, ``demo``, and ``imageio`` for reading and
writing images.  These modules print; the library never does.
"""
