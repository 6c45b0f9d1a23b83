"""TSB-AD's own metric, run in its own environment: VUS-PR, AUC-PR and AUC-ROC of score files.

TSB-AD's metric code (`tsb-ad` on PyPI) needs numpy < 2, which the project's environment does
not have, so bench/quality.py builds a small environment for it (`metric_python`) and runs this
file there. Each argument is an .npz with `score`, `label` and `x0`; one JSON line per file is
printed. The sliding window is TSB-AD's, derived from the first input's autocorrelation
(`find_length_rank(x0, rank=1)`), and scores are min-max scaled first, as TSB-AD's runner does.

    bench/.cache/tsbad-env/bin/python bench/vus.py scores.npz ...
"""

import json
import sys

import numpy as np
from sklearn.preprocessing import MinMaxScaler
from TSB_AD.evaluation.metrics import get_metrics
from TSB_AD.utils.slidingWindows import find_length_rank

for path in sys.argv[1:]:
    arrays = np.load(path)
    window = find_length_rank(arrays["x0"].astype(float), rank=1)
    score = MinMaxScaler().fit_transform(arrays["score"].astype(float).reshape(-1, 1)).ravel()
    found = get_metrics(score, arrays["label"].astype(int), slidingWindow=window)
    print(json.dumps({"path": path, "window": int(window), **{k: float(found[k]) for k in ("VUS-PR", "AUC-PR", "AUC-ROC")}}))
