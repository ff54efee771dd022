"""``python -m benchmarks.experiments [exp-1] [exp-2] [--quick | --standard] [--out DIR] [--seeds 0,1,2] ...``"""

from .runner import main

raise SystemExit(main())
