"""`python -m mllm_rft` = the `mllm-rft` console script."""

import sys

from mllm_rft.cli import main

if __name__ == "__main__":
    sys.exit(main())
