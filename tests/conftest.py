"""Settings for the whole test suite."""
import os

# FFTW wisdom: tests must neither write the user's cache nor measure plans in the
# background while other tests time or compute (tests/test_fft.py points it at tmp_path)
os.environ.setdefault("FASTCONV_FFTW_WISDOM", "0")
