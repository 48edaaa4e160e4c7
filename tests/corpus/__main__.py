import sys

from tests.corpus.coverage import main

sys.exit(main())
