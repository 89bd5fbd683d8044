import sys

from torchrec_ascend.train.cli import main

sys.exit(main())
