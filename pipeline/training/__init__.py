"""From data to a published model version: fitting (`fit`), threshold calibration
(`calibrate`), ONNX export with its parity gate (`export`), the int8 twin (`quantize`),
re-thresholding an exported model (`rethreshold`) and the scikit-learn estimator (`detector`).

The training profile: may import `model`, `runtime`, `artifact`, `data` and `core`, torch,
onnx, scipy and scikit-learn; never `ops` (its sibling), Prefect or matplotlib. Only the CLI,
the demo and the training and retraining flows import it (`make lint` checks each rule)."""
