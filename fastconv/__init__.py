"""fastconv: fast N-d convolution and the chapter's convolutional-network toolkit."""
from __future__ import annotations

__version__ = "0.1.0"

from ._config import get_num_threads, set_num_threads, thread_budget  # noqa: E402
from .signal import convolve, correlate, explain  # noqa: E402
from . import signal  # noqa: E402
from .calibration import calibrate  # noqa: E402
from .gabor import gabor_bank, gabor_kernel  # noqa: E402
