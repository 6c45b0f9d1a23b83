"""From data to a published model version: fitting (`fit`), threshold calibration
(`calibrate`), ONNX export with its parity gate (`export`), the int8 twin (`quantize`),
re-thresholding an exported model (`rethreshold`) and the scikit-learn estimator (`detector`).

The training profile: may import everything below it (`model`, `runtime`, `artifact`,
`data`, `core`), torch, onnx, scipy and scikit-learn. Only the CLI, the demo and the training
flow import it."""
